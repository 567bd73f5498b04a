//! Command-line flags of the settings table: one flag per setting of the
//! command, `--config FILE`, `--log-json` and `--print-config`; the layering
//! itself is `docproc_server::settings`.

use std::marker::PhantomData;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use docproc_server::settings::{build, Cmd, Kind, Settings, SPECS};

/// Which command a set of flags is for.
pub(crate) trait ForCmd {
    const CMD: Cmd;
}

#[derive(Debug)]
pub(crate) struct ServeCmd;
impl ForCmd for ServeCmd {
    const CMD: Cmd = Cmd::Serve;
}
#[derive(Debug)]
pub(crate) struct WorkerCmd;
impl ForCmd for WorkerCmd {
    const CMD: Cmd = Cmd::Worker;
}
#[derive(Debug)]
pub(crate) struct BrokerCmd;
impl ForCmd for BrokerCmd {
    const CMD: Cmd = Cmd::Broker;
}

/// The settings given on the command line for command `C`.
#[derive(Debug)]
pub(crate) struct Overrides<C> {
    config: Option<PathBuf>,
    print: bool,
    flags: Vec<(&'static str, String)>,
    _cmd: PhantomData<C>,
}

impl<C: ForCmd> Overrides<C> {
    /// Defaults, the file, the environment, then these flags.
    pub(crate) fn load(&self) -> anyhow::Result<Settings> {
        Settings::load(
            C::CMD,
            self.config.as_deref(),
            |k| std::env::var(k).ok(),
            &self.flags,
        )
        .map_err(anyhow::Error::from)
    }

    /// Loads the settings, starts logging, and with `--print-config` prints
    /// the settings in effect and returns `None` (the command then exits).
    pub(crate) fn start(&self) -> anyhow::Result<Option<Settings>> {
        let st = self.load()?;
        let log = build::log(&st)?;
        init_logging(log.json, &log.filter);
        if self.print {
            // Validate everything the command would, then show it.
            match C::CMD {
                Cmd::Broker => drop(build::broker(&st)?),
                Cmd::Serve | Cmd::Worker => drop(build::serve(&st)?),
            }
            for (key, value, source) in st.describe() {
                println!("{key} = {value:?}  # {source}");
            }
            return Ok(None);
        }
        Ok(Some(st))
    }
}

/// Human-readable or JSON lines on stderr.
pub(crate) fn init_logging(json: bool, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

impl<C: ForCmd> FromArgMatches for Overrides<C> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        for s in SPECS.iter().filter(|s| s.cmds.contains(&C::CMD)) {
            if let Some(v) = m.get_one::<String>(s.key) {
                flags.push((s.key, v.clone()));
            }
        }
        if m.get_flag("log-json") {
            flags.push(("log.format", "json".into()));
        }
        Ok(Self {
            config: m.get_one::<PathBuf>("config").cloned(),
            print: m.get_flag("print-config"),
            flags,
            _cmd: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<C: ForCmd> Args for Overrides<C> {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd
            .arg(
                Arg::new("config")
                    .long("config")
                    .env("DOCPROC_CONFIG")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML settings file (see docproc.example.toml); environment and flags override it"),
            )
            .arg(
                Arg::new("log-json")
                    .long("log-json")
                    .action(ArgAction::SetTrue)
                    .help("Log one JSON object per line (log.format = \"json\")"),
            )
            .arg(
                Arg::new("print-config")
                    .long("print-config")
                    .action(ArgAction::SetTrue)
                    .help("Check the settings, print those set and where each came from, and exit"),
            );
        for s in SPECS.iter().filter(|s| s.cmds.contains(&C::CMD)) {
            let mut env = s.env.join(", ");
            if s.secret {
                env.push_str("; secret");
            }
            let mut arg = Arg::new(s.key)
                .long(s.flag)
                .help(format!("{} [{}: {env}]", s.help, s.key));
            arg = match s.kind {
                Kind::Bool => arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_name("BOOL"),
                Kind::Int => arg.value_name("N"),
                Kind::List => arg.value_name("A,B"),
                Kind::Str => arg.value_name("VALUE"),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Reads a PEM file named by a setting.
pub(crate) fn read_pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
