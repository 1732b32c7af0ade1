//! The container engine, probed before any work: is the binary there, does an engine
//! answer, rootless or not, which OCI runtime and storage driver. Each failure is one line
//! naming the Debian package or the setting to change, and nothing waits forever: the
//! docker CLI without a daemon, or a stuck podman, is cut off after a deadline.
//!
//! podman always gets `--runtime <R> --cgroup-manager=cgroupfs --events-backend=file`:
//! cgroupfs and the file event log need neither systemd nor a user session, and the runtime
//! is Kata's DOCKER_RUNTIME (default runc; crun refuses hybrid cgroup hierarchies).
//! Containers get ulimits no higher than osbuilder's own (asking for more fails without
//! CAP_SYS_RESOURCE).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Which engine runs the builder container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    pub fn binary(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }

    fn package(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker.io",
        }
    }
}

/// A probed, working engine.
#[derive(Clone, Debug)]
pub struct Engine {
    pub kind: EngineKind,
    pub binary: PathBuf,
    /// Arguments every invocation gets before the subcommand.
    pub global: Vec<String>,
    pub version: String,
    pub rootless: bool,
    pub runtime: String,
    pub storage: String,
    /// SELinux labels are enforced: bind mounts need relabelling.
    pub selinux: bool,
}

/// How long `info` may take before the engine is declared unreachable.
const PROBE_DEADLINE: Duration = Duration::from_secs(60);

impl Engine {
    /// A command for this engine with the global arguments in place; it dies with
    /// osbuilder (see [`crate::process`]).
    pub fn command(&self) -> Command {
        let mut c = crate::process::command(&self.binary);
        c.args(&self.global);
        c
    }

    /// One line for the build log.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({}, runtime {}, storage {})",
            self.kind.binary(),
            self.version,
            if self.rootless { "rootless" } else { "root" },
            self.runtime,
            self.storage
        )
    }

    /// `run` arguments that every builder container gets: its name, removal on exit, no
    /// pull, the host's network (the package mirror may be on 127.0.0.1; rootless needs no
    /// slirp4netns), a fixed hostname (nothing of the host leaks into the rootfs), ulimits
    /// within osbuilder's own, and no log copy of the stream.
    pub fn run_args(&self, name: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--name".into(),
            name.into(),
            "--network".into(),
            "host".into(),
            "--hostname".into(),
            "localhost".into(),
            "--log-driver".into(),
            "none".into(),
        ];
        if self.kind == EngineKind::Podman {
            a.push("--pull=never".into());
        } else if let Some(r) = runtime_setting() {
            a.extend(["--runtime".into(), r]);
        }
        for (name, limit) in [
            ("nofile", libc::RLIMIT_NOFILE),
            ("nproc", libc::RLIMIT_NPROC),
        ] {
            let n = container_limit(limit);
            a.extend(["--ulimit".into(), format!("{name}={n}:{n}")]);
        }
        a
    }

    /// The options of a read-only bind mount (relabelled where SELinux enforces labels).
    pub fn ro_mount(&self, src: &Path, dst: &str) -> String {
        format!(
            "{}:{dst}:ro{}",
            src.display(),
            if self.selinux { ",z" } else { "" }
        )
    }

    /// `rm -f` of a container (ignored when it is already gone).
    pub fn remove_container(&self, name: &str) {
        let mut c = self.command();
        c.args(["rm", "-f"]);
        if self.kind == EngineKind::Podman {
            c.args(["-t", "0"]);
        }
        let _ = c
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The soft limit of osbuilder's own `resource`, capped at 4096 (plenty for a package
/// install): podman asks for more than the host allows unless told.
fn container_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(resource, &mut r) } == 0;
    if !ok || r.rlim_cur == libc::RLIM_INFINITY {
        return 4096;
    }
    r.rlim_cur.clamp(256, 4096)
}

/// The OCI runtime asked for: $OSBUILDER_OCI_RUNTIME, else Kata's $DOCKER_RUNTIME.
fn runtime_setting() -> Option<String> {
    ["OSBUILDER_OCI_RUNTIME", "DOCKER_RUNTIME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// Find `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).is_file().then(|| PathBuf::from(tool));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Probe `kind`; every problem is an error that says what to install or change.
pub fn probe(kind: EngineKind) -> Result<Engine> {
    let bin = kind.binary();
    let Some(binary) = which(bin) else {
        bail!(
            "--builder {bin}: `{bin}` is not installed (Debian package {}{}), or use --builder \
             native, which needs no container engine",
            kind.package(),
            if kind == EngineKind::Podman {
                "; with runc, and uidmap for rootless use"
            } else {
                ""
            }
        );
    };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    match kind {
        EngineKind::Podman => probe_podman(binary, euid),
        EngineKind::Docker => probe_docker(binary),
    }
}

fn probe_podman(binary: PathBuf, euid: u32) -> Result<Engine> {
    let runtime = runtime_setting().unwrap_or_else(|| "runc".into());
    if which(&runtime).is_none() && !Path::new("/usr/lib/cri-o-runc/sbin/runc").exists() {
        bail!(
            "--builder podman: OCI runtime `{runtime}` is not installed (Debian package {}); \
             or choose another with OSBUILDER_OCI_RUNTIME=crun (Kata's DOCKER_RUNTIME)",
            if runtime == "crun" { "crun" } else { "runc" }
        );
    }
    if euid != 0 {
        check_subids(euid)?;
    }
    let global = vec![
        "--runtime".to_string(),
        runtime.clone(),
        "--cgroup-manager=cgroupfs".to_string(),
        "--events-backend=file".to_string(),
    ];
    let mut c = crate::process::command(&binary);
    c.args(&global).args(["info", "--format", "json"]);
    let out = run_with_deadline(c, PROBE_DEADLINE, "podman info")?;
    if !out.status.success() {
        bail!(
            "--builder podman: `podman info` failed ({}): {}",
            out.status,
            last_line(&out.stderr)
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("--builder podman: `podman info --format json` printed no JSON")?;
    let rootless = info["host"]["security"]["rootless"]
        .as_bool()
        .unwrap_or(euid != 0);
    if rootless {
        // podman falls back to a one-id mapping without subordinate ids: a rootfs needs
        // root and the system users (up to 65534) inside the container.
        let mapped: u64 = info["host"]["idMappings"]["uidmap"]
            .as_array()
            .map(|m| m.iter().filter_map(|e| e["size"].as_u64()).sum())
            .unwrap_or(0);
        if mapped < 65536 {
            bail!(
                "--builder podman (rootless): only {mapped} uid(s) are mapped into containers; \
                 add a range of 65536 for this user to /etc/subuid and /etc/subgid (usermod \
                 --add-subuids 100000-165535 --add-subgids 100000-165535 USER), then run \
                 `podman system migrate`"
            );
        }
    }
    let storage = info["store"]["graphDriverName"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    Ok(Engine {
        kind: EngineKind::Podman,
        binary,
        global,
        version: info["version"]["Version"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        rootless,
        runtime: info["host"]["ociRuntime"]["name"]
            .as_str()
            .unwrap_or(&runtime)
            .to_string(),
        storage,
        selinux: info["host"]["security"]["selinuxEnabled"]
            .as_bool()
            .unwrap_or(false),
    })
}

fn probe_docker(binary: PathBuf) -> Result<Engine> {
    let mut c = crate::process::command(&binary);
    c.args(["info", "--format", "{{json .}}"]);
    let out = run_with_deadline(c, Duration::from_secs(20), "docker info")?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let version = info["ServerVersion"].as_str().unwrap_or("").to_string();
    if !out.status.success() || version.is_empty() {
        let why = [&out.stderr, &out.stdout]
            .iter()
            .map(|b| last_line(b))
            .find(|l| !l.is_empty())
            .unwrap_or_else(|| "no answer".into());
        bail!(
            "--builder docker: the docker CLI is installed but no Docker engine answers ({why}); \
             start one (Debian package docker.io: systemctl start docker), point DOCKER_HOST at \
             one, or use --builder podman, which needs no daemon"
        );
    }
    let security: Vec<String> = info["SecurityOptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Engine {
        kind: EngineKind::Docker,
        binary,
        global: Vec::new(),
        version,
        rootless: security.iter().any(|s| s.contains("rootless")),
        runtime: runtime_setting()
            .or_else(|| info["DefaultRuntime"].as_str().map(str::to_string))
            .unwrap_or_else(|| "runc".into()),
        storage: info["Driver"].as_str().unwrap_or("unknown").to_string(),
        selinux: security.iter().any(|s| s.contains("selinux")),
    })
}

/// Rootless podman needs subordinate uid and gid ranges for this user, and the setuid
/// helpers that apply them.
fn check_subids(euid: u32) -> Result<()> {
    let user = user_name(euid);
    for helper in ["newuidmap", "newgidmap"] {
        if which(helper).is_none() {
            bail!("--builder podman (rootless): `{helper}` is missing (Debian package uidmap)");
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let count: u64 = text
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().split(':');
                let who = f.next()?;
                let _start = f.next()?;
                let n: u64 = f.next()?.trim().parse().ok()?;
                (who == euid.to_string() || Some(who) == user.as_deref()).then_some(n)
            })
            .sum();
        if count < 65536 {
            bail!(
                "--builder podman (rootless): {} subordinate ids for {} in {file}; a rootfs \
                 needs 65536 (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 \
                 {}, then `podman system migrate`), or build as root, or use --builder \
                 native, which needs none",
                if count == 0 {
                    "no".to_string()
                } else {
                    count.to_string()
                },
                user.clone().unwrap_or_else(|| format!("uid {euid}")),
                user.clone().unwrap_or_else(|| "USER".into()),
            );
        }
    }
    Ok(())
}

fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        f.next()?;
        (f.next()? == uid.to_string()).then(|| name.to_string())
    })
}

fn last_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Run `cmd` to completion, or kill it after `deadline` (an engine that does not answer
/// must not hang the build).
pub fn run_with_deadline(
    mut cmd: Command,
    deadline: Duration,
    what: &str,
) -> Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not answer within {} s; is the container engine stuck or its \
                 socket unreachable?",
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_stay_within_ours() {
        let n = container_limit(libc::RLIMIT_NOFILE);
        assert!((256..=4096).contains(&n));
    }

    #[test]
    fn a_missing_engine_names_its_package() {
        // A PATH-independent check: an absolute path that does not exist.
        assert!(which("/nonexistent/podman").is_none());
        assert!(which("sh").is_some());
    }

    #[test]
    fn the_deadline_kills_a_stuck_command() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let e = run_with_deadline(c, Duration::from_millis(200), "sleep").unwrap_err();
        assert!(e.to_string().contains("did not answer"), "{e}");
    }
}
