//! A deque that holds its first element in place: a reader's queue and its parked reads
//! most often hold one element or none (a listener that keeps up has the write it is
//! about to be sent; a waiting reader, its one read), and that one then costs no
//! allocation: no block made by the writer's thread and freed by the reader's on every
//! write, and none kept for it by each of thousands of listeners. Later elements go to a
//! `VecDeque` grown and shrunk within the bounds of `push_bounded` and `shrink_bounded`,
//! given back once only the first is left.

use std::collections::VecDeque;

use super::store::{push_bounded, shrink_bounded};

pub(super) struct InlineDeque<T> {
    first: Option<T>,
    /// The elements after `first`. Invariant: empty while `first` is `None`; `Some` of an
    /// empty deque only between a removal and the next [`InlineDeque::shrink`]. Boxed so
    /// that the record of every reader holds one word for it, not a deque's four: few
    /// readers ever have a second element.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<T>>>,
}

impl<T> Default for InlineDeque<T> {
    fn default() -> Self {
        InlineDeque {
            first: None,
            rest: None,
        }
    }
}

impl<T> From<VecDeque<T>> for InlineDeque<T> {
    fn from(mut q: VecDeque<T>) -> Self {
        let first = q.pop_front();
        let rest = (!q.is_empty()).then(|| Box::new(q));
        InlineDeque { first, rest }
    }
}

impl<T> InlineDeque<T> {
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn front(&self) -> Option<&T> {
        self.first.as_ref()
    }

    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.first.as_mut()
    }

    pub fn back(&self) -> Option<&T> {
        self.rest
            .as_ref()
            .and_then(|r| r.back())
            .or(self.first.as_ref())
    }

    pub fn back_mut(&mut self) -> Option<&mut T> {
        match self.rest.as_mut().and_then(|r| r.back_mut()) {
            Some(b) => Some(b),
            None => self.first.as_mut(),
        }
    }

    pub fn push_back(&mut self, v: T) {
        if self.first.is_none() {
            self.first = Some(v);
        } else {
            push_bounded(self.rest.get_or_insert_default(), v);
        }
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let front = self.first.take()?;
        self.first = self.rest.as_mut().and_then(|r| r.pop_front());
        Some(front)
    }

    /// Removes the element at `i`.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        if i == 0 {
            self.pop_front()
        } else {
            self.rest.as_mut()?.remove(i - 1)
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        self.first
            .iter_mut()
            .chain(self.rest.iter_mut().flat_map(|r| r.iter_mut()))
    }

    /// Removes the elements from `keep` on, and yields them in order.
    pub fn drain_from(&mut self, keep: usize) -> impl Iterator<Item = T> + '_ {
        let first = if keep == 0 { self.first.take() } else { None };
        let rest = self.rest.as_mut().map(|r| {
            let from = keep.saturating_sub(1).min(r.len());
            r.drain(from..)
        });
        first.into_iter().chain(rest.into_iter().flatten())
    }

    /// Gives back the room a burst left behind (all of it once only the first is left).
    pub fn shrink(&mut self) {
        match &mut self.rest {
            Some(r) if r.is_empty() => self.rest = None,
            Some(r) => shrink_bounded(r),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `q` holds, checked against its own accessors.
    fn items(q: &InlineDeque<u32>) -> Vec<u32> {
        let v: Vec<u32> = q.iter().copied().collect();
        assert_eq!(q.len(), v.len());
        assert_eq!(q.is_empty(), v.is_empty());
        assert_eq!(q.front().copied(), v.first().copied());
        assert_eq!(q.back().copied(), v.last().copied());
        v
    }

    enum Op {
        Push(u32),
        Pop,
        Remove(usize),
        DrainFrom(usize),
        SetBack(u32),
    }

    /// Every operation against a `VecDeque` doing the same, with a shrink after each.
    #[test]
    fn behaves_as_a_vecdeque() {
        use Op::*;
        let cases: &[(&str, &[Op])] = &[
            ("one in, one out", &[Push(1), Pop, Pop]),
            (
                "spill and come back",
                &[Push(1), Push(2), Push(3), Pop, Pop, Push(4), Pop, Pop],
            ),
            ("remove the first", &[Push(1), Push(2), Push(3), Remove(0)]),
            (
                "remove a later one",
                &[Push(1), Push(2), Push(3), Remove(2), Remove(5)],
            ),
            (
                "drain all",
                &[Push(1), Push(2), Push(3), DrainFrom(0), Push(9)],
            ),
            (
                "drain after the first",
                &[Push(1), Push(2), Push(3), DrainFrom(1)],
            ),
            (
                "drain from the middle",
                &[Push(1), Push(2), Push(3), Push(4), DrainFrom(2)],
            ),
            ("drain past the end", &[Push(1), Push(2), DrainFrom(7)]),
            ("set the back", &[Push(1), SetBack(5), Push(2), SetBack(6)]),
            ("set the back of none", &[SetBack(5)]),
        ];
        for (name, ops) in cases {
            let mut q = InlineDeque::default();
            let mut want = VecDeque::new();
            for op in *ops {
                match *op {
                    Push(v) => {
                        q.push_back(v);
                        want.push_back(v);
                    }
                    Pop => assert_eq!(q.pop_front(), want.pop_front(), "{name}"),
                    Remove(i) => assert_eq!(q.remove(i), want.remove(i), "{name}"),
                    DrainFrom(k) => {
                        let got: Vec<u32> = q.drain_from(k).collect();
                        let k = k.min(want.len());
                        assert_eq!(got, want.drain(k..).collect::<Vec<_>>(), "{name}");
                    }
                    SetBack(v) => {
                        if let Some(b) = q.back_mut() {
                            *b = v;
                        }
                        if let Some(b) = want.back_mut() {
                            *b = v;
                        }
                    }
                }
                q.shrink();
                assert_eq!(
                    items(&q),
                    want.iter().copied().collect::<Vec<_>>(),
                    "{name}"
                );
                let back: Vec<u32> = q.iter_mut().rev().map(|x| *x).collect();
                assert_eq!(
                    back,
                    want.iter().rev().copied().collect::<Vec<_>>(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn one_element_costs_no_allocation_and_a_spill_is_given_back() {
        let mut q = InlineDeque::default();
        q.push_back(1u32);
        assert!(q.rest.is_none(), "the first element is held in place");
        q.push_back(2);
        assert!(q.rest.is_some());
        q.pop_front();
        q.shrink();
        assert!(
            q.rest.is_none(),
            "once only the first is left, the spill is freed"
        );
        assert_eq!(q.front(), Some(&2));
        let from: InlineDeque<u32> = VecDeque::from([7]).into();
        assert!(from.rest.is_none());
        let from: InlineDeque<u32> = VecDeque::from([7, 8]).into();
        assert_eq!(from.iter().copied().collect::<Vec<_>>(), [7, 8]);
    }
}
