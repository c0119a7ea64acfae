//! The NATS engine's mount options: `backend`, `nats_creds`, `nats_replicas`,
//! `nats_storage`, `nats_prefix`, `nats_timeout`, parsed and checked before anything is
//! mounted. Knows nothing of connections.

use std::path::PathBuf;
use std::time::Duration;

use super::names;
use crate::options::{OptionError, err};
use crate::stream::Policy;

/// The engine's mount options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Server URLs (`--backend`); empty: the local engine.
    pub urls: Vec<String>,
    /// A NATS credentials file (`--nats-creds`).
    pub creds: Option<PathBuf>,
    /// JetStream replicas of each stream (`nats_replicas`).
    pub replicas: usize,
    /// File storage instead of memory (`nats_storage=file`).
    pub file_storage: bool,
    /// Namespace prefix (`nats_prefix`).
    pub prefix: String,
    /// How long a write (or a create, an rm) waits for the cluster before EIO.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            urls: Vec::new(),
            creds: None,
            replicas: 1,
            file_storage: false,
            prefix: names::DEFAULT_PREFIX.to_string(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Parses `backend`: comma-separated `nats://HOST:PORT` (or `tls://`) URLs.
pub fn parse_backend(value: &str) -> Result<Vec<String>, OptionError> {
    const WANT: &str = "expected nats://HOST:PORT[,nats://HOST:PORT...]";
    let urls: Vec<String> = value.split(',').map(|u| u.trim().to_string()).collect();
    for u in &urls {
        let scheme_ok = u.starts_with("nats://") || u.starts_with("tls://");
        if !scheme_ok || u.parse::<async_nats::ServerAddr>().is_err() {
            return Err(err("backend", value, WANT));
        }
    }
    Ok(urls)
}

impl Settings {
    /// Applies one option that is the engine's; `None` when `key` is not.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<Result<(), OptionError>> {
        let r = match key {
            "backend" => parse_backend(value).map(|u| self.urls = u),
            "nats_creds" if !value.is_empty() => {
                self.creds = Some(PathBuf::from(value));
                Ok(())
            }
            "nats_creds" => Err(err(key, value, "expected a credentials file")),
            "nats_replicas" => match value.parse::<usize>() {
                // JetStream's own limit.
                Ok(n @ 1..=5) => {
                    self.replicas = n;
                    Ok(())
                }
                _ => Err(err(key, value, "expected 1 to 5")),
            },
            "nats_storage" => match value {
                "memory" => {
                    self.file_storage = false;
                    Ok(())
                }
                "file" => {
                    self.file_storage = true;
                    Ok(())
                }
                _ => Err(err(key, value, "expected memory or file")),
            },
            "nats_prefix" if names::valid_prefix(value) => {
                self.prefix = value.to_string();
                Ok(())
            }
            "nats_prefix" => Err(err(key, value, "expected 1 to 32 letters, digits or '-'")),
            "nats_timeout" => match crate::start::parse_duration(value) {
                Ok(d) if !d.is_zero() => {
                    self.timeout = d;
                    Ok(())
                }
                _ => Err(err(key, value, "expected a duration above 0, e.g. 10s")),
            },
            _ => return None,
        };
        Some(r)
    }

    /// Whether the engine is chosen.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Checks the options together: the engine's need a backend, and the mount's policies
    /// must hold across hosts.
    pub fn check(&self, policy: &Policy) -> Result<(), OptionError> {
        if !self.enabled() {
            let d = Settings::default();
            let given = [
                ("nats_creds", self.creds != d.creds),
                ("nats_replicas", self.replicas != d.replicas),
                ("nats_storage", self.file_storage != d.file_storage),
                ("nats_prefix", self.prefix != d.prefix),
                ("nats_timeout", self.timeout != d.timeout),
            ];
            if let Some((name, _)) = given.iter().find(|(_, g)| *g) {
                return Err(err("option", name, "needs --backend nats://HOST:PORT"));
            }
            return Ok(());
        }
        if let Some(creds) = &self.creds
            && let Err(e) = std::fs::File::open(creds)
        {
            return Err(err(
                "nats_creds",
                &creds.display().to_string(),
                format!("cannot read it: {e}"),
            ));
        }
        if let Some((option, value)) = crate::engine::shared_policy_problem(policy) {
            return Err(err(
                option,
                value,
                "cannot hold across hosts with --backend (see README: streams on NATS)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_their_errors() {
        let cases: &[(&str, &str, Result<(), &str>)] = &[
            ("backend", "nats://127.0.0.1:4222", Ok(())),
            ("backend", "nats://a:1,tls://b:2", Ok(())),
            ("backend", "http://a:1", Err("invalid backend 'http://a:1'")),
            ("backend", "nats://a:1,", Err("invalid backend")),
            ("nats_replicas", "3", Ok(())),
            (
                "nats_replicas",
                "0",
                Err("invalid nats_replicas '0': expected 1 to 5"),
            ),
            ("nats_storage", "file", Ok(())),
            ("nats_storage", "disk", Err("invalid nats_storage 'disk'")),
            ("nats_prefix", "team-a", Ok(())),
            ("nats_prefix", "a.b", Err("invalid nats_prefix 'a.b'")),
            ("nats_timeout", "2s", Ok(())),
            ("nats_timeout", "0s", Err("invalid nats_timeout '0s'")),
            ("nats_creds", "", Err("invalid nats_creds ''")),
        ];
        for (key, value, want) in cases {
            let got = Settings::default().apply(key, value).unwrap();
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.to_string().starts_with(w), "{e} vs {w}"),
                (got, want) => panic!("{key}={value}: {got:?}, want {want:?}"),
            }
        }
        assert!(Settings::default().apply("ring_buffer_size", "1").is_none());
    }

    #[test]
    fn checked_together() {
        let mut s = Settings::default();
        s.apply("nats_replicas", "3").unwrap().unwrap();
        let e = s.check(&Policy::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid option 'nats_replicas': needs --backend nats://HOST:PORT"
        );
        s.apply("backend", "nats://h:1").unwrap().unwrap();
        assert!(s.check(&Policy::default()).is_ok());
        let block = Policy {
            slow_reader: crate::stream::SlowReader::Block,
            ..Policy::default()
        };
        let e = s.check(&block).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid slow_reader 'block': cannot hold"),
            "{e}"
        );
    }
}
