//! etcd's `--config-file`: a YAML file whose keys are etcd's flag names
//! (etcd's `etcd.conf.yml.sample`), read as etcd reads it.
//!
//! The file becomes a list of `--flag=value` arguments that clap parses like
//! a command line, so a setting means the same wherever it comes from. As in
//! etcd, when a file is given every other flag and every `ETCD_*` variable is
//! ignored ([`crate::main`] re-parses with the file's arguments alone).
//!
//! The mapping, etcd's:
//! - a scalar key is its flag (`heartbeat-interval: 100` is
//!   `--heartbeat-interval=100`); an empty value keeps the default;
//! - a list (`log-outputs: [stderr]`) is the comma-separated flag value;
//! - `client-transport-security` and `peer-transport-security` hold the TLS
//!   flags without their prefixes, `socket-options` the `socket-reuse-*`
//!   ones;
//! - etcd's duration keys are integer nanoseconds (`grpc-keepalive-timeout:
//!   20000000000`); cairn also takes Go duration strings (`20s`) there, which
//!   etcd refuses;
//! - `experimental-snapshot-catch-up-entries` is etcd's key for the flag
//!   `--experimental-snapshot-catchup-entries`;
//! - a key that is no flag is ignored with a warning (etcd ignores it
//!   silently).

use yaml_rust2::{Yaml, YamlLoader};

/// Keys whose integer values etcd reads as nanoseconds.
const DURATION_KEYS: &[&str] = &[
    "backend-batch-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-corrupt-check-time",
    "experimental-compact-hash-check-time",
    "experimental-compaction-sleep-interval",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
    "experimental-downgrade-check-time",
];

/// The flag a key of a nested block stands for.
fn nested_flag(block: &str, key: &str) -> Option<String> {
    let flag = match (block, key) {
        ("client-transport-security", "allowed-hostname") => "client-cert-allowed-hostname".into(),
        ("client-transport-security", "allowed-cn") => return None,
        ("client-transport-security", k) => k.to_string(),
        ("peer-transport-security", "allowed-cn") => "peer-cert-allowed-cn".into(),
        ("peer-transport-security", "allowed-hostname") => "peer-cert-allowed-hostname".into(),
        ("peer-transport-security", "client-cert-auth") => "peer-client-cert-auth".into(),
        ("peer-transport-security", k) => format!("peer-{k}"),
        ("socket-options", k) => format!("socket-{k}"),
        _ => return None,
    };
    Some(flag)
}

/// A scalar or list as a flag value; `None` for an empty value.
fn value(key: &str, v: &Yaml) -> Result<Option<String>, String> {
    Ok(Some(match v {
        Yaml::Null | Yaml::BadValue => return Ok(None),
        Yaml::String(s) if s.is_empty() => return Ok(None),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) if DURATION_KEYS.contains(&key) => format!("{n}ns"),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| value(key, i).map(Option::unwrap_or_default))
                .collect::<Result<_, _>>()?;
            if parts.iter().all(String::is_empty) {
                return Ok(None);
            }
            parts.join(",")
        }
        other => return Err(format!("{key}: unexpected value {other:?}")),
    }))
}

/// The arguments `text` stands for, and warnings for keys that are no flag.
/// `is_flag` says whether a long flag name exists.
pub fn to_args(
    text: &str,
    is_flag: impl Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<String>), String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut args = Vec::new();
    let mut warnings = Vec::new();
    let Some(doc) = docs.into_iter().next() else {
        return Ok((args, warnings));
    };
    let Yaml::Hash(map) = doc else {
        return Err("the configuration file is not a mapping of flag names to values".into());
    };
    let mut push = |flag: String, v: &Yaml| -> Result<(), String> {
        let flag = match flag.as_str() {
            "experimental-snapshot-catch-up-entries" => {
                "experimental-snapshot-catchup-entries".into()
            }
            _ => flag,
        };
        if !is_flag(&flag) {
            warnings.push(format!(
                "configuration key {flag:?} is not an etcd flag: ignored"
            ));
            return Ok(());
        }
        if let Some(v) = value(&flag, v)? {
            args.push(format!("--{flag}={v}"));
        }
        Ok(())
    };
    for (k, v) in &map {
        let Yaml::String(key) = k else {
            return Err(format!("configuration key {k:?} is not a string"));
        };
        match v {
            Yaml::Hash(inner) => {
                for (ik, iv) in inner {
                    let Yaml::String(ik) = ik else {
                        return Err(format!("{key}: key {ik:?} is not a string"));
                    };
                    // A nested key that stands for no flag is warned about
                    // under its dotted name.
                    let flag = nested_flag(key, ik).unwrap_or_else(|| format!("{key}.{ik}"));
                    push(flag, iv)?;
                }
            }
            _ => push(key.clone(), v)?,
        }
    }
    Ok((args, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_sample_maps_to_flags() {
        let text = "
name: 'n1'
data-dir:
heartbeat-interval: 100
listen-client-urls: http://127.0.0.1:2379,http://127.0.0.1:3379
strict-reconfig-check: false
log-outputs: [stderr]
grpc-keepalive-timeout: 20000000000
experimental-watch-progress-notify-interval: 5s
experimental-snapshot-catch-up-entries: 100
auto-compaction-retention: \"1\"
client-transport-security:
  cert-file:
  client-cert-auth: false
  allowed-cn: []
peer-transport-security:
  trusted-ca-file: /ca.pem
  allowed-hostname: [a, b]
no-such-key: 1
";
        let (args, warnings) = to_args(text, |f| !f.contains('.') && f != "no-such-key").unwrap();
        assert_eq!(
            args,
            [
                "--name=n1",
                "--heartbeat-interval=100",
                "--listen-client-urls=http://127.0.0.1:2379,http://127.0.0.1:3379",
                "--strict-reconfig-check=false",
                "--log-outputs=stderr",
                "--grpc-keepalive-timeout=20000000000ns",
                "--experimental-watch-progress-notify-interval=5s",
                "--experimental-snapshot-catchup-entries=100",
                "--auto-compaction-retention=1",
                "--client-cert-auth=false",
                "--peer-trusted-ca-file=/ca.pem",
                "--peer-cert-allowed-hostname=a,b",
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(to_args("[1, 2]", |_| true).is_err());
        assert!(to_args("name: [unclosed", |_| true).is_err());
        assert_eq!(to_args("", |_| true).unwrap().0.len(), 0);
    }
}
