//! Fuzzing of every parser of outside input with proptest: sizes, `-o` option strings and
//! per-stream setting values. None may panic; every rejection names what was rejected.

use proptest::prelude::*;
use streamfs::namespace::Namespace;
use streamfs::options::MountSettings;
use streamfs::size::parse_size;
use streamfs::stream::{Budgets, Meta};
use streamfs::xattr::{SetError, SettingLimits, apply_setting};

fn size_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-+ ]?[0-9]{0,22}(\\.[0-9]{0,20})?[ ]?(B|K|KB|KiB|M|MB|MiB|G|GB|GiB|T|TB|XB|kb|mB|)",
        "[0-9.]{0,8}[a-zA-Z]{0,4}",
    ]
}

proptest! {
    #[test]
    fn sizes_parse_or_fail_cleanly(s in size_like()) {
        match parse_size(&s) {
            Ok(n) => {
                // A parsed size starts with a digit or a dot and is exactly reproducible.
                prop_assert!(s.trim().trim_start_matches('+').starts_with(|c: char| c.is_ascii_digit() || c == '.'));
                prop_assert_eq!(parse_size(&s), Ok(n));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn whole_numbers_of_units_are_exact(n in 0u64..1_000_000, unit in 0usize..4) {
        let (suffix, shift) = [("B", 0), ("KB", 10), ("MB", 20), ("GB", 30)][unit];
        prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
    }

    #[test]
    fn option_strings_never_panic_and_errors_name_the_input(
        opts in prop::collection::vec(
            prop_oneof![
                any::<String>(),
                "[a-z_]{1,8}=[ -~\\n\\t]{0,6}",
                "(channel_buffer_size|ring_buffer_size|slow_reader|on_writer_close|uid|gid|umask|allow_other|ro|bogus)(=[a-zA-Z0-9.-]{0,8})?",
            ],
            0..5,
        )
    ) {
        let joined = opts.join(",");
        let mut m = MountSettings::default();
        if let Err(e) = m.apply_options(&joined) {
            let text = e.to_string();
            prop_assert!(text.starts_with("invalid "), "{}", text);
            prop_assert!(text.contains(&format!("'{}'", e.value.escape_debug())), "{}", text);
            prop_assert!(joined.contains(e.value.as_str()), "{} not in {}", e.value, joined);
            prop_assert_eq!(text.lines().count(), 1);
        }
    }

    #[test]
    fn stream_settings_never_panic_and_bad_values_change_nothing(
        name in "(channel_buffer_size|ring_buffer_size|slow_reader|on_writer_close|writes|[a-z_]{0,12})",
        value in size_like(),
    ) {
        let ns = Namespace::new(Budgets::new(1000, 2000));
        let now = std::time::SystemTime::UNIX_EPOCH;
        let meta = Meta { mode: 0o644, uid: 0, gid: 0, crtime: now, ctime: now };
        let (s, _) = ns.create(b"s", meta).unwrap();
        let before = s.stats();
        match apply_setting(&s, name.as_bytes(), &value, SettingLimits::NONE) {
            Ok(()) => {}
            Err(SetError::Invalid(e)) => {
                prop_assert_eq!(e.value, value);
                let after = s.stats();
                prop_assert_eq!(after.budgets, before.budgets);
                prop_assert_eq!(after.policy, before.policy);
            }
            Err(SetError::ReadOnly | SetError::Unknown) => {
                prop_assert_eq!(s.stats().budgets, before.budgets);
            }
        }
    }
}
