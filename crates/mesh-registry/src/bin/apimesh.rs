//! `apimesh`: publish a mesh config to etcd, and read it back.
//!
//! ```text
//! apimesh [--endpoints URL[,URL…]] [--prefix /apimesh/] [--user NAME --password PW] COMMAND
//!
//!   apply -f mesh.toml      validate, then make the prefix hold exactly the file's objects
//!   apply -f mesh.toml --dry-run   validate and show what would change
//!   get <kind>/<name>       print one object (JSON); `get auth` for a singleton
//!   list [kind]             print every key (and value with -v)
//!   delete <kind>/<name>    delete one object
//! ```
//!
//! The endpoints default to `$APIMESH_ETCD_ENDPOINTS` or
//! `http://127.0.0.1:2379`. Exit status: 0 done, 1 failed, 2 bad usage.

use std::process::ExitCode;

use mesh_registry::{EtcdAdmin, EtcdOptions, ObjectKind};

const USAGE: &str = "usage: apimesh [--endpoints URL[,URL...]] [--prefix PREFIX] [--user NAME --password PW] <command>

commands:
  apply -f FILE [--dry-run]   validate FILE (TOML) and write it as one key per object;
                              keys the file no longer has are deleted (registered
                              endpoints are left alone)
  get KIND/NAME               print one object as JSON (KIND: apis, services, routes,
                              consumers, plans, endpoints; or auth, mesh, gateway)
  list [KIND] [-v]            list keys (with values when -v)
  delete KIND/NAME            delete one object";

struct Args {
    endpoints: Vec<String>,
    prefix: Option<String>,
    user: Option<String>,
    password: Option<String>,
    command: Vec<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        endpoints: Vec::new(),
        prefix: None,
        user: None,
        password: None,
        command: Vec::new(),
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--endpoints" => {
                args.endpoints = value("--endpoints")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--prefix" => args.prefix = Some(value("--prefix")?),
            "--user" => args.user = Some(value("--user")?),
            "--password" => args.password = Some(value("--password")?),
            "-h" | "--help" => return Err(String::new()),
            _ => args.command.push(a),
        }
    }
    if args.endpoints.is_empty() {
        args.endpoints = std::env::var("APIMESH_ETCD_ENDPOINTS")
            .unwrap_or_else(|_| "http://127.0.0.1:2379".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if args.command.is_empty() {
        return Err("no command given".into());
    }
    Ok(args)
}

/// Splits `kind/name` (or a bare singleton `auth`).
fn object(arg: &str) -> Result<(ObjectKind, String), String> {
    let (head, name) = arg.split_once('/').unwrap_or((arg, ""));
    let kind = ObjectKind::parse(head).ok_or_else(|| format!("unknown kind `{head}`"))?;
    if !kind.is_singleton() && name.is_empty() {
        return Err(format!("expected `{kind}/<name>`"));
    }
    Ok((kind, name.to_owned()))
}

enum Failure {
    Usage(String),
    Failed(String),
}

async fn run(args: Args) -> Result<(), Failure> {
    let usage = Failure::Usage;
    let failed = |e: String| Failure::Failed(e);
    let mut options = EtcdOptions::new(args.endpoints.clone());
    if let Some(p) = &args.prefix {
        options = options.prefix(p.clone());
    }
    match (&args.user, &args.password) {
        (Some(u), Some(p)) => options = options.user(u.clone(), p.clone()),
        (None, None) => {}
        _ => return Err(usage("--user and --password go together".into())),
    }
    let cmd = args.command.first().map(String::as_str).unwrap_or("");
    let rest = &args.command[1..];
    match cmd {
        "apply" => {
            let mut file = None;
            let mut dry_run = false;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-f" | "--file" => file = it.next().cloned(),
                    "--dry-run" => dry_run = true,
                    other => return Err(usage(format!("apply: unexpected `{other}`"))),
                }
            }
            let file = file.ok_or_else(|| usage("apply needs -f FILE".into()))?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| failed(format!("cannot read {file}: {e}")))?;
            let config =
                mesh_core::Config::from_toml(&text).map_err(|e| failed(format!("{file}: {e}")))?;
            if let Err(e) = mesh_core::Snapshot::build(config.clone(), 1) {
                return Err(failed(format!(
                    "{file} is invalid; nothing was written:\n{e}"
                )));
            }
            if dry_run {
                println!("{file} is valid");
                return Ok(());
            }
            let mut admin = EtcdAdmin::connect(options)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let report = admin
                .apply(&config)
                .await
                .map_err(|e| failed(e.to_string()))?;
            for k in &report.put {
                println!("put     {}{k}", admin.prefix());
            }
            for k in &report.deleted {
                println!("deleted {}{k}", admin.prefix());
            }
            println!(
                "applied {file}: {} written, {} deleted, {} unchanged, in {} transaction(s), revision {}",
                report.put.len(),
                report.deleted.len(),
                report.unchanged,
                report.transactions,
                report.revision
            );
            Ok(())
        }
        "get" | "delete" => {
            let [arg] = rest else {
                return Err(usage(format!("{cmd} takes one KIND/NAME")));
            };
            let (kind, name) = object(arg).map_err(usage)?;
            let mut admin = EtcdAdmin::connect(options)
                .await
                .map_err(|e| failed(e.to_string()))?;
            if cmd == "get" {
                match admin
                    .get(kind, &name)
                    .await
                    .map_err(|e| failed(e.to_string()))?
                {
                    Some(v) => {
                        let pretty = serde_json::from_str::<serde_json::Value>(&v)
                            .ok()
                            .and_then(|j| serde_json::to_string_pretty(&j).ok())
                            .unwrap_or(v);
                        println!("{pretty}");
                        Ok(())
                    }
                    None => Err(failed(format!("{arg} not found"))),
                }
            } else if admin
                .delete(kind, &name)
                .await
                .map_err(|e| failed(e.to_string()))?
            {
                println!("deleted {arg}");
                Ok(())
            } else {
                Err(failed(format!("{arg} not found")))
            }
        }
        "list" => {
            let mut kind = None;
            let mut verbose = false;
            for a in rest {
                match a.as_str() {
                    "-v" | "--values" => verbose = true,
                    k => {
                        kind = Some(
                            ObjectKind::parse(k)
                                .ok_or_else(|| usage(format!("unknown kind `{k}`")))?,
                        )
                    }
                }
            }
            let mut admin = EtcdAdmin::connect(options)
                .await
                .map_err(|e| failed(e.to_string()))?;
            for (k, v) in admin.list(kind).await.map_err(|e| failed(e.to_string()))? {
                if verbose {
                    println!("{k}\t{v}");
                } else {
                    println!("{k}");
                }
            }
            Ok(())
        }
        other => Err(usage(format!("unknown command `{other}`"))),
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("apimesh: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("apimesh: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("apimesh: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("apimesh: {e}");
            ExitCode::FAILURE
        }
    }
}
