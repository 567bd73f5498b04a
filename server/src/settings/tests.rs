use std::collections::HashMap;
use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn file(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("docproc.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_then_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "[workers]\nexcel = 3\npdf = 4\nai = 5\n[jobs]\nmax_retries = 7\n",
    );
    let st = Settings::load(
        Cmd::Serve,
        Some(&f),
        env(&[("EXCEL_WORKERS", "8"), ("DOCPROC_PDF_WORKERS", "9")]),
        &[("workers.excel", "11".into())],
    )
    .unwrap();
    let c = build::serve(&st).unwrap();
    assert_eq!(
        c.pools.excel, 11,
        "a flag beats the environment and the file"
    );
    assert_eq!(c.pools.pdf, 9, "the environment beats the file");
    assert_eq!(c.pools.ai, 5, "the file beats the default");
    assert_eq!(c.max_retries, 7);
    assert_eq!(
        c.job_timeout,
        crate::config::ServeConfig::default().job_timeout,
        "unset: the default"
    );
    assert_eq!(
        st.get("workers.excel").unwrap().source,
        Source::Flag("excel-workers")
    );
    assert_eq!(
        st.get("workers.pdf").unwrap().source,
        Source::Env("DOCPROC_PDF_WORKERS")
    );
    assert_eq!(st.get("workers.ai").unwrap().source, Source::File(f));
}

#[test]
fn docproc_names_win_over_the_seed_names() {
    let st = Settings::load(
        Cmd::Worker,
        None,
        env(&[("PDF_WORKERS", "1"), ("DOCPROC_PDF_WORKERS", "6")]),
        &[],
    )
    .unwrap();
    assert_eq!(build::serve(&st).unwrap().pools.pdf, 6);
}

#[test]
fn seed_queue_settings_make_a_url() {
    let load = |pairs: &[(&str, &str)]| {
        build::serve(&Settings::load(Cmd::Worker, None, env(pairs), &[]).unwrap())
            .map(|c| c.queue_url)
    };
    assert_eq!(load(&[]).unwrap(), None);
    assert_eq!(
        load(&[
            ("QUEUE_TYPE", "redis"),
            ("REDIS_HOST", "cache"),
            ("REDIS_PORT", "6380")
        ])
        .unwrap(),
        Some("redis://cache:6380".into())
    );
    assert_eq!(
        load(&[("QUEUE_TYPE", "redis"), ("REDIS_PASSWORD", "p@ss word")]).unwrap(),
        Some("redis://:p%40ss+word@127.0.0.1:6379".into())
    );
    assert_eq!(
        load(&[
            ("QUEUE_TYPE", "kafka"),
            ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
        ])
        .unwrap(),
        Some("kafka://k1:9092,k2:9092".into())
    );
    assert_eq!(
        load(&[("QUEUE_TYPE", "rabbitmq")]).unwrap(),
        Some("amqp://guest:guest@127.0.0.1:5672/%2f".into())
    );
    assert_eq!(
        load(&[
            ("QUEUE_TYPE", "rabbitmq"),
            ("RABBITMQ_URL", "amqp://u:p@mq:5672/jobs")
        ])
        .unwrap(),
        Some("amqp://u:p@mq:5672/jobs".into())
    );
    assert!(load(&[("QUEUE_TYPE", "rabbitmq"), ("RABBITMQ_URL", "mq:5672")]).is_err());
    assert_eq!(
        load(&[("QUEUE_TYPE", "redis"), ("DOCPROC_QUEUE", "memory://")]).unwrap(),
        Some("memory://".into()),
        "an explicit URL wins"
    );
    assert_eq!(
        load(&[
            ("DOCPROC_QUEUE", "grpc://b:7070"),
            ("DOCPROC_QUEUE_API_KEY", "k1")
        ])
        .unwrap(),
        Some("grpc://k1@b:7070".into())
    );
    let e = load(&[("QUEUE_TYPE", "rabbit")]).unwrap_err().to_string();
    assert!(e.contains("queue.type") && e.contains("QUEUE_TYPE"), "{e}");
}

#[test]
fn bad_settings_are_named_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Settings, &str)> = vec![
        (
            Settings::load(Cmd::Serve, None, env(&[("EXCEL_WORKERS", "many")]), &[]).unwrap(),
            "`workers.excel` = \"many\" (from environment variable EXCEL_WORKERS): expected a whole number",
        ),
        (
            Settings::load(
                Cmd::Serve,
                Some(&file(dir.path(), "[jobs]\ntimeout_secs = 0\n")),
                env(&[]),
                &[],
            )
            .unwrap(),
            "`jobs.timeout_secs` = \"0\" (from file",
        ),
        (
            Settings::load(Cmd::Serve, None, env(&[]), &[("server.listen", "nowhere".into())])
                .unwrap(),
            "`server.listen` = \"nowhere\" (from flag --listen)",
        ),
        (
            Settings::load(Cmd::Serve, None, env(&[("DOCPROC_API_KEYS", "ci:root:sha256:00")]), &[])
                .unwrap(),
            "`auth.keys` = \"<secret>\" (from environment variable DOCPROC_API_KEYS): key \"ci\": the hash must be 64 hex digits",
        ),
        (
            Settings::load(Cmd::Serve, None, env(&[("DOCPROC_LOG_FORMAT", "xml")]), &[]).unwrap(),
            "`log.format`",
        ),
    ];
    for (st, want) in cases {
        let got = build::serve(&st)
            .err()
            .or_else(|| build::log(&st).err())
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
    let unknown = Settings::load(
        Cmd::Serve,
        Some(&file(dir.path(), "[workers]\nexel = 2\n")),
        env(&[]),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        unknown.contains("unknown setting `workers.exel`"),
        "{unknown}"
    );
    let syntax = Settings::load(
        Cmd::Serve,
        Some(&file(dir.path(), "[workers\n")),
        env(&[]),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(syntax.contains("not valid TOML"), "{syntax}");
}

#[test]
fn public_address_without_keys_needs_insecure() {
    let public = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("DOCPROC_LISTEN", "0.0.0.0:8080")];
        pairs.extend_from_slice(extra);
        build::serve(&Settings::load(Cmd::Serve, None, env(&pairs), &[]).unwrap())
    };
    let e = public(&[]).unwrap_err().to_string();
    assert!(
        e.contains("--insecure") && e.contains("0.0.0.0:8080"),
        "{e}"
    );
    assert!(public(&[("DOCPROC_INSECURE", "true")]).is_ok());
    let (_, key) =
        docproc_broker::auth::generate("ci", docproc_broker::auth::Scope::Admin).unwrap();
    assert!(public(&[("DOCPROC_API_KEYS", &key.entry())]).is_ok());
    // The worker listens on nothing: no such check.
    let w = Settings::load(
        Cmd::Worker,
        None,
        env(&[("DOCPROC_LISTEN", "0.0.0.0:1")]),
        &[],
    )
    .unwrap();
    assert!(build::serve(&w).is_ok());
}

#[test]
fn every_setting_is_in_the_example_file_which_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docproc.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // Uncomment every `# key = value` line and load the result: each
    // example value must be valid (TLS files excepted: they must exist).
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), &uncommented);
    let st = Settings::load(Cmd::Serve, Some(&f), env(&[]), &[]).unwrap();
    for s in SPECS {
        assert!(
            st.get(s.key).is_some(),
            "docproc.example.toml lacks `{}`",
            s.key
        );
    }
    let _ = build::log(&st).unwrap();
}

/// The default a setting's help names, when it is one value (not prose
/// such as "none" or "a third of the job timeout").
fn documented_default(spec: &Spec) -> Option<&'static str> {
    let start = spec.help.rfind("[default: ")? + "[default: ".len();
    let value = spec.help[start..].strip_suffix(']')?;
    let literal = !value.contains(' ') && value != "none" && !value.contains("DATA_DIR");
    literal.then_some(value)
}

/// What a command runs with, compared whole (`Debug` of every config it
/// builds from the settings).
fn built(cmd: Cmd, st: &Settings) -> String {
    let log = build::log(st).unwrap();
    match cmd {
        Cmd::Serve | Cmd::Worker => format!("{log:?} {:?}", build::serve(st).unwrap()),
        Cmd::Broker => format!("{log:?} {:?}", build::broker(st).unwrap()),
    }
}

/// A default is decided once, by the code: the default each setting's help
/// (and so `--help` and the README) names is what the command runs with
/// when the setting is unset, and `docproc.example.toml` shows that value.
#[test]
fn documented_defaults_are_the_defaults() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docproc.example.toml"),
    )
    .unwrap();
    let mut checked = 0;
    for spec in SPECS {
        let Some(default) = documented_default(spec) else {
            continue;
        };
        for &cmd in spec.cmds {
            let unset = Settings::load(cmd, None, env(&[]), &[]).unwrap();
            let set = Settings::load(cmd, None, env(&[(spec.env[0], default)]), &[])
                .unwrap_or_else(|e| {
                    panic!("{}: the documented default {default:?}: {e}", spec.key)
                });
            assert_eq!(
                built(cmd, &unset),
                built(cmd, &set),
                "{} ({cmd:?}): the help says [default: {default}], the code does otherwise",
                spec.key
            );
            checked += 1;
        }
        // Numbers and switches: the example shows the default itself.
        if matches!(spec.kind, Kind::Int | Kind::Bool) {
            let (section, name) = spec.key.rsplit_once('.').unwrap_or(("", spec.key));
            let shown = example_value(&example, section, name)
                .unwrap_or_else(|| panic!("docproc.example.toml lacks `{}`", spec.key));
            assert_eq!(shown, default, "docproc.example.toml's `{}`", spec.key);
        }
    }
    assert!(checked > 30, "only {checked} defaults checked");
}

/// The value of `# name = value` under `[section]` (top level for "").
fn example_value<'a>(text: &'a str, section: &str, name: &str) -> Option<&'a str> {
    let mut current = "";
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s;
        } else if current == section {
            let body = line.strip_prefix("# ").unwrap_or(line);
            if let Some((k, v)) = body.split_once(" = ") {
                if k == name {
                    return Some(v.trim());
                }
            }
        }
    }
    None
}

#[test]
fn job_types_keep_only_the_named_pools() {
    let pools = |pairs: &[(&str, &str)]| {
        build::serve(&Settings::load(Cmd::Worker, None, env(pairs), &[]).unwrap()).map(|c| c.pools)
    };
    let p = pools(&[("WORKER_TYPE", "pdf"), ("DOCPROC_PDF_WORKERS_MAX", "6")]).unwrap();
    let types: Vec<_> = p
        .specs()
        .into_iter()
        .map(|s| (s.job_type, s.min, s.max))
        .collect();
    assert_eq!(types, vec![("pdf_processing", 2, 6)]);
    let p = pools(&[("DOCPROC_JOB_TYPES", "excel_processing, webhook")]).unwrap();
    let types: Vec<_> = p.specs().into_iter().map(|s| s.job_type).collect();
    assert_eq!(types, vec!["excel_processing", "webhook_delivery"]);
    let e = pools(&[("WORKER_TYPE", "gpu")]).unwrap_err().to_string();
    assert!(
        e.contains("workers.job_types") && e.contains("WORKER_TYPE"),
        "{e}"
    );
    assert!(pools(&[("WORKER_TYPE", ",")]).is_err());
}
