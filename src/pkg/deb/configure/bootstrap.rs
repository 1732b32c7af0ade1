//! What a Debian bootstrap (debootstrap, mmdebstrap) leaves besides the maintainer
//! scripts' effects: the placeholder /etc/fstab, the lock files dpkg and apt create when
//! they run (and apt's `partial` directories, owned by _apt), an empty /run (a tmpfs
//! covers it at boot; /run/lock stays for /var/lock), and no per-machine identity: no
//! D-Bus machine id, an empty /etc/machine-id where systemd made one, `localhost` as the
//! host name (debootstrap and mmdebstrap copy the build host's).

use anyhow::Result;

use super::Session;
use crate::pkg::extract::Attrs;
use crate::tree::mtree::MType;

pub fn finish(s: &mut Session<'_>) -> Result<()> {
    let m = s.mtime;
    if s.ex.lstat(b"etc/fstab")?.is_none() {
        s.ex.write_file(
            b"etc/fstab",
            &mut &b"# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"[..],
            Attrs::root(0o644, m),
        )?;
    }
    // No host identity: the guest is "localhost" until it is given a name.
    s.ex.write_file(
        b"etc/hostname",
        &mut &b"localhost\n"[..],
        Attrs::root(0o644, m),
    )?;
    if s.ex.lstat(b"etc/hosts")?.is_none() {
        s.ex.write_file(
            b"etc/hosts",
            &mut &b"127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"[..],
            Attrs::root(0o644, m),
        )?;
    }
    let installed = |s: &Session<'_>, n: &str| s.pkgs.iter().any(|p| p.name == n);
    if installed(s, "dpkg") {
        for l in ["var/lib/dpkg/lock", "var/lib/dpkg/lock-frontend"] {
            s.ex.write_file(l.as_bytes(), &mut &b""[..], Attrs::root(0o640, m))?;
        }
    }
    if installed(s, "apt") {
        let apt = s.accounts.uid_of("_apt").unwrap_or(0);
        for d in ["var/lib/apt/lists", "var/cache/apt/archives"] {
            s.ex.create_dir(d.as_bytes(), Attrs::root(0o755, m))?;
            s.ex.write_file(
                format!("{d}/lock").as_bytes(),
                &mut &b""[..],
                Attrs::root(0o640, m),
            )?;
            let partial = format!("{d}/partial");
            s.ex.create_dir(partial.as_bytes(), Attrs::root(0o700, m))?;
            s.ex.set_attrs(partial.as_bytes(), Some(0o700), Some((apt, 0)))?;
        }
    }
    // /run: only /run/lock and what is below it.
    for n in s.ex.read_dir(b"run")?.unwrap_or_default() {
        if n == b"lock" {
            continue;
        }
        remove_tree(s, &format!("run/{}", String::from_utf8_lossy(&n)))?;
    }
    s.ex.remove_file(b"var/lib/dbus/machine-id")?;
    if s.ex.lstat(b"etc/machine-id")?.is_some() || installed(s, "systemd") {
        s.ex.remove_file(b"etc/machine-id")?;
        s.ex.write_file(b"etc/machine-id", &mut &b""[..], Attrs::root(0o444, m))?;
    }
    Ok(())
}

fn remove_tree(s: &mut Session<'_>, p: &str) -> Result<()> {
    match s.ex.lstat(p.as_bytes())? {
        Some(st) if st.kind == MType::Dir => {
            for n in s.ex.read_dir(p.as_bytes())?.unwrap_or_default() {
                remove_tree(s, &format!("{p}/{}", String::from_utf8_lossy(&n)))?;
            }
            s.ex.remove_dir(p.as_bytes())?;
        }
        Some(_) => s.ex.remove_file(p.as_bytes())?,
        None => {}
    }
    Ok(())
}
