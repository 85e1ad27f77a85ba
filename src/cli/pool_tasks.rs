//! `lote pool create`'s flags for how tasks run (user, elevation, limits)
//! and the pool's secrets, and `lote pool secret`.

use clap::Subcommand;

use super::output::refused;
use lote::api::Request;
use lote::client::ClientError;
use lote::domain::pool::{Elevation, PoolSecret, TaskSettings, UserScope};
use lote::types::{PoolId, Secret};

/// How the pool's tasks run on nodes whose agent runs as root.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TaskSettingsArgs {
    /// task: each task runs as a user of its own and cannot read another
    /// task's working directory; pool: every task of the pool runs as one
    /// user and can.
    #[arg(long, value_enum, default_value = "task")]
    task_user_scope: UserScope,
    /// admin runs the pool's tasks as root (still in their cgroups): they
    /// can read the node's credential and change the machine.
    #[arg(long, value_enum, default_value = "non-admin")]
    task_elevation: Elevation,
    /// The start task's own elevation (admin to install software).
    #[arg(long, value_enum, default_value = "non-admin")]
    start_task_elevation: Elevation,
    /// MiB of memory one attempt may hold [default: the node's limit].
    #[arg(long, value_name = "MIB")]
    task_memory_max: Option<u64>,
    /// Processes one attempt may have at once [default: the node's limit].
    #[arg(long, value_name = "N")]
    task_processes_max: Option<u32>,
    /// An attempt's CPU share against the node's others, 1..=10000
    /// [default: the node's, 100].
    #[arg(long, value_name = "WEIGHT")]
    task_cpu_weight: Option<u32>,
}

impl TaskSettingsArgs {
    pub fn settings(&self) -> TaskSettings {
        TaskSettings {
            user_scope: self.task_user_scope,
            elevation: self.task_elevation,
            start_task_elevation: self.start_task_elevation,
            memory_mib: self.task_memory_max,
            processes_max: self.task_processes_max,
            cpu_weight: self.task_cpu_weight,
        }
    }
}

/// The pool's secrets, given at creation.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecretArgs {
    /// A secret installed on every node, NAME=@FILE (the value is read
    /// from FILE, '-' for standard input; never from the command line):
    /// tasks read it from $LOTE_SECRETS_DIR/NAME. Repeatable.
    #[arg(long = "secret", value_name = "NAME=@FILE")]
    secrets: Vec<String>,
    /// Also put this secret in the start task's environment, as a
    /// variable of its name. Repeatable.
    #[arg(long = "start-task-secret", value_name = "NAME")]
    start_task_secrets: Vec<String>,
}

impl SecretArgs {
    pub fn secrets(&self) -> Result<Vec<PoolSecret>, ClientError> {
        let mut out = Vec::new();
        for arg in &self.secrets {
            let (name, value) = read_secret(arg)?;
            out.push(PoolSecret {
                start_task_env: self.start_task_secrets.contains(&name),
                name,
                value,
            });
        }
        if let Some(missing) = self
            .start_task_secrets
            .iter()
            .find(|n| !out.iter().any(|s| &s.name == *n))
        {
            return Err(refused(format!(
                "--start-task-secret {missing}: no --secret {missing}=@FILE is given"
            )));
        }
        Ok(out)
    }
}

/// `NAME=@FILE`: the name and the file's content.
fn read_secret(arg: &str) -> Result<(String, Secret), ClientError> {
    let Some((name, path)) = arg.split_once("=@") else {
        return Err(refused(format!(
            "secret {arg:?}: expected NAME=@FILE (values are read from files, never taken from the command line, where other users and shell history see them)"
        )));
    };
    let bytes = if path == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| refused(format!("secret {name}: cannot read standard input: {e}")))?;
        buf
    } else {
        std::fs::read(path)
            .map_err(|e| refused(format!("secret {name}: cannot read {path}: {e}")))?
    };
    let value = String::from_utf8(bytes)
        .map_err(|_| refused(format!("secret {name}: {path} is not UTF-8 text")))?;
    Ok((name.to_string(), Secret::new(value)))
}

/// A pool's secrets after creation.
#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Add a secret or replace its value: every node of the pool has the
    /// new value within seconds, in $LOTE_SECRETS_DIR/NAME (a start task
    /// takes a changed environment variable at the node's next reboot).
    ///
    /// Example: lote pool secret set render DB_PASSWORD=@./db-password
    #[command(verbatim_doc_comment)]
    Set {
        pool: PoolId,
        #[arg(value_name = "NAME=@FILE")]
        secret: String,
        /// Also put it in the start task's environment.
        #[arg(long)]
        start_task_env: bool,
    },
    /// Remove a secret: its file goes from every node within seconds.
    Remove { pool: PoolId, name: String },
}

impl SecretCmd {
    pub fn request(self) -> Result<Request, ClientError> {
        Ok(match self {
            SecretCmd::Set {
                pool,
                secret,
                start_task_env,
            } => {
                let (name, value) = read_secret(&secret)?;
                Request::SetPoolSecret {
                    pool,
                    secret: PoolSecret {
                        name,
                        value,
                        start_task_env,
                    },
                }
            }
            SecretCmd::Remove { pool, name } => Request::RemovePoolSecret { pool, name },
        })
    }
}
