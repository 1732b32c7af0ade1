//! Hermetic tests of build files, the lock file and the stage cache: repositories built and
//! signed here (deb with gpg, apk with a test RSA key), served on 127.0.0.1, built with
//! `osbuilder build` / `release` / `lock`. The real-mirror release of examples/ is in
//! tests/release.rs.

mod common;
mod deb_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::apkrepo;
use deb_support::{E, Fault, Gpg, Pkg, gpg_key, pkg, serve, serve_with, write_repo};

const SUITE: &str = "testsuite";

/// The host's arch in osbuilder's and Debian's naming (the reference agent is built for it).
fn host() -> (&'static str, &'static str) {
    if cfg!(target_arch = "aarch64") {
        ("aarch64", "arm64")
    } else {
        ("x86_64", "amd64")
    }
}

fn osb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osbuilder"));
    c.env_remove("OSBUILDER_MIRROR")
        .env_remove("OSBUILDER_CACHE_DIR")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(c: &mut Command) -> (String, String) {
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "{c:?} failed ({}):\n{err}\n{out}",
        o.status
    );
    (out, err)
}

/// Run, expect exit status `code`, return stderr.
fn fails(c: &mut Command, code: i32) -> String {
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(code), "{c:?}:\n{err}\n{out}");
    err
}

/// JSON events of a `--json` run.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn finished<'a>(ev: &'a [serde_json::Value], stage: &str) -> Vec<&'a serde_json::Value> {
    ev.iter()
        .filter(|e| e["event"] == "stage-finish" && e["stage"] == stage)
        .collect()
}

struct Deb {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    www: PathBuf,
    url: String,
    key: Gpg,
}

fn deb_pkgs(app_version: &str) -> Vec<Pkg> {
    deb_pkgs_for(host().1, app_version)
}

/// `app` (depending on `libapp`) for Debian arch `deb`.
fn deb_pkgs_for(deb: &str, app_version: &str) -> Vec<Pkg> {
    vec![
        pkg(
            "app",
            app_version,
            deb,
            "Depends: libapp\n",
            &[
                E::Dir("./usr/"),
                E::Dir("./usr/bin/"),
                E::File(
                    "./usr/bin/app",
                    format!("app {app_version}\n").as_bytes(),
                    0o755,
                    0,
                    0,
                ),
            ],
        ),
        pkg(
            "libapp",
            "2.0",
            deb,
            "",
            &[E::File("./usr/lib/libapp.so", b"lib", 0o644, 0, 0)],
        ),
    ]
}

fn deb_repo() -> Deb {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let key = gpg_key(&dir, "repo");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    write_repo(&www, SUITE, host().1, &deb_pkgs("1.0"), &key, "");
    let url = serve(&www);
    Deb {
        _tmp: tmp,
        dir,
        www,
        url,
        key,
    }
}

/// A build file for the hermetic deb repository with the given artifact tables.
fn deb_file(r: &Deb, artifacts: &str) -> PathBuf {
    let p = r.dir.join("osbuilder.toml");
    std::fs::write(
        &p,
        format!(
            "[[guest]]\nname = \"app\"\ndistro = \"debian\"\nversion = \"{SUITE}\"\n\
             arches = [\"{}\"]\ninit = \"agent-init\"\npackages = [\"app\"]\n\
             mirror = \"{}\"\nkeyrings = [\"{}\"]\n{artifacts}",
            host().0,
            r.url,
            r.key.public.display()
        ),
    )
    .unwrap();
    p
}

fn job(c: &mut Command, sub: &str, file: &Path, cache: &Path) {
    c.arg(sub).arg("-f").arg(file).arg("--cache-dir").arg(cache);
}

fn yaml_of(release: &Path, file: &str) -> String {
    std::fs::read_to_string(
        release
            .join(host().0)
            .join(format!("{file}.osbuilder.yaml")),
    )
    .unwrap()
}

#[test]
fn bad_build_files_are_refused_with_file_and_line_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let (arch, _) = host();
    let cache = d.path().join("cache");
    let dup = format!(
        "bad.toml:11: the initrd of guest \"two\" writes {arch}/kata-debian-trixie.initrd, as does the initrd of guest \"one\" at bad.toml:5"
    );
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!(
                "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"{arch}\"]\n[guest.initrd]\ncompresion = \"gzip\"\n"
            ),
            vec!["bad.toml:6: unknown field `compresion`"],
        ),
        (
            "bad value",
            format!(
                "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"{arch}\"]\n\n[guest.image]\nfs = \"btrfs\"\n"
            ),
            vec!["bad.toml:7: fs = \"btrfs\" is not one of \"ext4\", \"xfs\", \"erofs\""],
        ),
        (
            "a guest the matrix refuses",
            format!(
                "[[guest]]\nname = \"ok\"\ndistro = \"debian\"\narches = [\"{arch}\"]\n[guest.initrd]\n\
                 [[guest]]\nname = \"alp\"\ndistro = \"alpine\"\ninit = \"systemd\"\narches = [\"{arch}\"]\n[guest.image]\n\
                 [[guest]]\nname = \"clear\"\ndistro = \"clearlinux\"\narches = [\"s390x\"]\n[guest.initrd]\n"
            ),
            vec![
                "cannot be built as written (nothing was done)",
                "bad.toml:6: guest \"alp\" on",
                "alpine does not support init mode systemd",
                "bad.toml:12: guest \"clear\" on s390x: clearlinux does not support s390x",
                "x86_64: systemd (default), agent-init",
            ],
        ),
        (
            "two artifacts with the same output name",
            format!(
                "[[guest]]\nname = \"one\"\ndistro = \"debian\"\narches = [\"{arch}\"]\n[guest.initrd]\n\
                 [[guest]]\nname = \"two\"\ndistro = \"debian\"\narches = [\"{arch}\"]\n\n[guest.initrd]\ncompression = \"zstd\"\n"
            ),
            vec![&dup],
        ),
        (
            "an agent file that does not exist",
            format!(
                "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"{arch}\"]\nagent_bin = \"nope.sh\"\n[guest.initrd]\n"
            ),
            vec!["bad.toml:1: guest \"a\" on", "nope.sh does not exist"],
        ),
    ];
    for (what, text, expect) in cases {
        let f = d.path().join("bad.toml");
        std::fs::write(&f, &text).unwrap();
        for sub in ["build", "release", "lock"] {
            let mut c = osb();
            c.arg(sub).arg("-f").arg("bad.toml").current_dir(d.path());
            c.arg("--cache-dir").arg(&cache);
            if sub == "release" {
                c.args(["-o", "out"]);
            }
            let err = fails(&mut c, 2);
            for e in &expect {
                assert!(err.contains(e), "{what} ({sub}): expected {e:?} in:\n{err}");
            }
        }
        assert!(
            !cache.exists(),
            "{what}: work started (the cache was created)"
        );
        assert!(!d.path().join("out").exists());
        assert!(!d.path().join("bad.lock").exists());
    }
    // --only with an unknown key or a value that matches nothing.
    std::fs::write(
        d.path().join("good.toml"),
        format!(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"{arch}\"]\n[guest.initrd]\n"
        ),
    )
    .unwrap();
    let err = fails(
        osb()
            .args(["build", "-f", "good.toml", "--only", "colour=red"])
            .current_dir(d.path()),
        2,
    );
    assert!(
        err.contains("unknown key 'colour'; use one of guest, variant, arch, artifact, distro"),
        "{err}"
    );
    let err = fails(
        osb()
            .args(["build", "-f", "good.toml", "--only", "guest=b"])
            .current_dir(d.path()),
        2,
    );
    assert!(
        err.contains("--only guest=b matches nothing in good.toml; it has guest a"),
        "{err}"
    );
    let err = fails(
        osb()
            .args(["build", "-f", "missing.toml"])
            .current_dir(d.path()),
        2,
    );
    assert!(
        err.contains("build file missing.toml does not exist"),
        "{err}"
    );
}

#[test]
fn the_lock_pins_deb_packages_and_locked_builds_survive_an_index_bump_offline() {
    if !common::needs::tools(&[("gpg", "gnupg")]) {
        return;
    }
    let r = deb_repo();
    let file = deb_file(&r, "[guest.initrd]\ncompression = \"none\"\n");
    let cache = r.dir.join("cache");
    let lock = r.dir.join("osbuilder.lock");

    // First release: resolved, locked, built.
    let rel1 = r.dir.join("rel1");
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    ok(c.arg("-o").arg(&rel1));
    let locked = std::fs::read_to_string(&lock).unwrap();
    let parsed: toml::Value = toml::from_str(&locked).unwrap();
    let g = &parsed["guest"][0];
    assert_eq!(g["name"].as_str(), Some("app"));
    assert_eq!(g["format"].as_str(), Some("deb"));
    let repo = g["repository"][0].as_table().unwrap();
    assert!(
        repo["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("dists/{SUITE}/InRelease"))
    );
    let inrelease = std::fs::read(r.www.join(format!("dists/{SUITE}/InRelease"))).unwrap();
    assert_eq!(
        repo["sha256"].as_str(),
        Some(deb_support::sha256(&inrelease).as_str())
    );
    let pkgs = g["packages"].as_array().unwrap();
    let app = pkgs
        .iter()
        .find(|p| p["name"].as_str() == Some("app"))
        .unwrap();
    assert_eq!(app["version"].as_str(), Some("1.0"));
    let deb = std::fs::read(r.www.join(format!("pool/main/app_1.0_{}.deb", host().1))).unwrap();
    assert_eq!(
        app["sha256"].as_str(),
        Some(deb_support::sha256(&deb).as_str())
    );
    assert_eq!(pkgs.len(), 2, "{locked}");
    assert!(yaml_of(&rel1, "kata-debian-testsuite.initrd").contains("version: \"1.0\""));

    // The repository moves on: app 1.1, and 1.0 is gone from the pool.
    std::fs::remove_dir_all(r.www.join("pool")).unwrap();
    write_repo(&r.www, SUITE, host().1, &deb_pkgs("1.1"), &r.key, "");
    // Stage entries are dropped so the rootfs is really installed again; and the server
    // serves nothing at all: a locked build needs only the cache.
    ok(osb()
        .args(["cache", "gc", "--all", "--cache-dir"])
        .arg(&cache));
    let away = r.dir.join("www-away");
    std::fs::rename(&r.www, &away).unwrap();
    let rel2 = r.dir.join("rel2");
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    let (out, _) = ok(c.args(["--locked", "--json", "-o"]).arg(&rel2));
    std::fs::rename(&away, &r.www).unwrap();
    let ev = events(&out);
    assert_eq!(finished(&ev, "download")[0]["bytes"], 0, "{out}");
    assert_eq!(finished(&ev, "pack")[0]["cached"], false, "{out}");
    assert!(yaml_of(&rel2, "kata-debian-testsuite.initrd").contains("version: \"1.0\""));
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        locked,
        "--locked wrote the lock"
    );
    // A plain build keeps the lock's versions too.
    let mut c = osb();
    job(&mut c, "build", &file, &cache);
    ok(&mut c);
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), locked);

    // Without the cache the locked set cannot be had: the error names the package.
    let fresh = r.dir.join("fresh-cache");
    let mut c = osb();
    job(&mut c, "release", &file, &fresh);
    let err = fails(c.args(["--locked", "-o"]).arg(r.dir.join("rel3")), 1);
    assert!(
        err.contains("app 1.0 (")
            && err.contains("is pinned; the repository now offers 1.1 and no longer 1.0"),
        "{err}"
    );
    assert!(err.contains("osbuilder lock --update"), "{err}");
    assert!(!r.dir.join("rel3").exists());

    // `lock --update` takes the new version and says so; the next build uses it.
    let mut c = osb();
    job(&mut c, "lock", &file, &cache);
    let (_, err) = ok(c.arg("--update"));
    let _ = err;
    let updated = std::fs::read_to_string(&lock).unwrap();
    assert!(
        updated.contains("name = \"app\", version = \"1.1\""),
        "{updated}"
    );
    let rel4 = r.dir.join("rel4");
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    ok(c.args(["--locked", "-o"]).arg(&rel4));
    assert!(yaml_of(&rel4, "kata-debian-testsuite.initrd").contains("version: \"1.1\""));
}

#[test]
fn apk_packages_lock_in_the_same_format_and_a_locked_build_takes_them_from_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let (arch, _) = host();
    let www = d.path().join("www");
    let repo = |v: &str| {
        let mut p = apkrepo::Pkg::new("hello", v, arch);
        p.files = vec![
            apkrepo::Entry::dir("etc"),
            apkrepo::Entry::file("etc/hello", format!("{v}\n").as_bytes(), 0o644),
        ];
        let dir = www.join("v3.22/main").join(arch);
        let _ = std::fs::remove_dir_all(&dir);
        apkrepo::write_repo(&www, "v3.22", arch, &[p], apkrepo::test_key());
    };
    repo("1.0-r0");
    let keys = apkrepo::write_keys_dir(d.path());
    let url = apkrepo::serve(&www);
    let file = d.path().join("alpine.toml");
    std::fs::write(
        &file,
        format!(
            "[[guest]]\nname = \"tiny\"\ndistro = \"alpine\"\nversion = \"3.22\"\narches = [\"{arch}\"]\n\
             packages = [\"hello\"]\nmirror = \"{url}\"\nkeys_dirs = [\"{}\"]\n[guest.initrd]\ncompression = \"none\"\n",
            keys.display()
        ),
    )
    .unwrap();
    let cache = d.path().join("cache");
    let rel = d.path().join("rel");
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    ok(c.arg("-o").arg(&rel));
    let lock_path = d.path().join("alpine.lock");
    let locked = std::fs::read_to_string(&lock_path).unwrap();
    let parsed: toml::Value = toml::from_str(&locked).unwrap();
    let g = &parsed["guest"][0];
    assert_eq!(g["format"].as_str(), Some("apk"), "{locked}");
    let index = std::fs::read(www.join("v3.22/main").join(arch).join("APKINDEX.tar.gz")).unwrap();
    assert_eq!(
        g["repository"][0]["sha256"].as_str(),
        Some(deb_support::sha256(&index).as_str())
    );
    let hello = &g["packages"][0];
    assert_eq!(hello["version"].as_str(), Some("1.0-r0"));
    let apk = std::fs::read(www.join("v3.22/main").join(arch).join("hello-1.0-r0.apk")).unwrap();
    assert_eq!(
        hello["sha256"].as_str(),
        Some(deb_support::sha256(&apk).as_str())
    );

    repo("1.1-r0");
    ok(osb()
        .args(["cache", "gc", "--all", "--cache-dir"])
        .arg(&cache));
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    ok(c.args(["--locked", "-o"]).arg(&rel));
    let yaml = std::fs::read_to_string(
        rel.join(arch)
            .join("kata-alpine-3.22.initrd.osbuilder.yaml"),
    )
    .unwrap();
    assert!(yaml.contains("version: \"1.0-r0\""), "{yaml}");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), locked);

    let mut c = osb();
    job(&mut c, "build", &file, &d.path().join("fresh"));
    let err = fails(c.arg("--locked"), 1);
    assert!(
        err.contains("hello 1.0-r0 (") && err.contains("now offers 1.1-r0"),
        "{err}"
    );
}

#[test]
fn the_stage_cache_repacks_only_what_changed_and_serves_concurrent_builds() {
    if !common::needs::tools(&[("gpg", "gnupg"), ("mkfs.ext4", "e2fsprogs")]) {
        return;
    }
    let r = deb_repo();
    let cache = r.dir.join("cache");
    let image = |free: u32| format!("[guest.image]\ndax = false\nfree_mb = {free}\n");
    let file = deb_file(&r, &image(1));
    // Two builds at once on one cache: both succeed, one entry per stage, no leftovers.
    let spawn = || {
        let mut c = osb();
        job(&mut c, "build", &file, &cache);
        c.arg("--json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (ls, _) = ok(osb()
        .args(["cache", "ls", "--json", "--cache-dir"])
        .arg(&cache));
    let entries = events(&ls);
    assert_eq!(entries.len(), 2, "{ls}");
    for kind in ["rootfs", "artifact"] {
        let dir = cache.join("stages").join(kind);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{kind}: {names:?}");
    }

    // Only the image size changes: nothing is resolved, downloaded or installed; only packed.
    let file = deb_file(&r, &image(2));
    let mut c = osb();
    job(&mut c, "build", &file, &cache);
    let (out, _) = ok(c.arg("--json"));
    let ev = events(&out);
    assert!(
        finished(&ev, "resolve").is_empty() && finished(&ev, "download").is_empty(),
        "{out}"
    );
    assert_eq!(finished(&ev, "extract")[0]["cached"], true, "{out}");
    assert_eq!(finished(&ev, "pack")[0]["cached"], false, "{out}");
    let summary = ev.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["downloaded"], 0);
    // And unchanged: nothing at all is packed.
    let mut c = osb();
    job(&mut c, "build", &file, &cache);
    let (out, _) = ok(c.arg("--json"));
    let ev = events(&out);
    assert!(
        finished(&ev, "pack").iter().all(|e| e["cached"] == true),
        "{out}"
    );
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "stage-start" && e["stage"] == "pack"),
        "{out}"
    );
    let (ls, _) = ok(osb().args(["cache", "ls", "--cache-dir"]).arg(&cache));
    assert!(ls.contains("3 entries"), "{ls}");
    let (gc, _) = ok(osb().args(["cache", "gc", "--cache-dir"]).arg(&cache));
    assert!(gc.contains("removed 0 stage entries"), "{gc}");
}

#[test]
fn an_arch_whose_pool_the_mirror_does_not_serve_stops_the_run_before_anything_is_built() {
    if !common::needs::tools(&[("gpg", "gnupg")]) {
        return;
    }
    let r = deb_repo();
    // s390x from a second mirror whose signed index lists the packages while its pool
    // answers 404 — what the real mirror here does for ppc64el and s390x.
    let www = r.dir.join("www-s390x");
    write_repo(
        &www,
        SUITE,
        "s390x",
        &deb_pkgs_for("s390x", "1.0"),
        &r.key,
        "",
    );
    let url = serve_with(&www, |p| {
        if p.contains("/pool/") {
            Fault::NotFound
        } else {
            Fault::None
        }
    });
    let agent = r.dir.join("agent-stand-in.sh");
    std::fs::write(&agent, "#!/bin/sh\nexec sleep infinity\n").unwrap();
    let file = r.dir.join("osbuilder.toml");
    std::fs::write(
        &file,
        format!(
            "[[guest]]\nname = \"app\"\ndistro = \"debian\"\nversion = \"{SUITE}\"\n\
             arches = [\"{}\", \"s390x\"]\ninit = \"agent-init\"\npackages = [\"app\"]\n\
             mirror = \"{}\"\nkeyrings = [\"{}\"]\n[guest.initrd]\ncompression = \"none\"\n\
             [guest.arch.s390x]\nmirror = \"{url}\"\nagent_bin = \"{}\"\n",
            host().0,
            r.url,
            r.key.public.display(),
            agent.display()
        ),
    )
    .unwrap();
    let cache = r.dir.join("cache");
    let rel = r.dir.join("rel");
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    let o = c.args(["--json", "-o"]).arg(&rel).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}\n{out}");
    // One line naming the job, the file and the 404, and the way out.
    assert!(
        err.contains("nothing was built: job app/s390x (1 of 2)")
            && err.contains("--only arch=s390x")
            && err.contains("_s390x.deb")
            && err.contains("404"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The host's job was resolved and downloaded, but not built: no time spent on a run
    // that cannot finish, and no release tree.
    let ev = events(&out);
    assert_eq!(finished(&ev, "download").len(), 1, "{out}");
    for stage in ["extract", "provision", "pack"] {
        assert!(finished(&ev, stage).is_empty(), "{stage}: {out}");
    }
    assert!(!rel.exists());
    // Leaving the arch out, as the error says, builds the rest.
    let mut c = osb();
    job(&mut c, "release", &file, &cache);
    ok(c.args(["--only", &format!("arch={}", host().0), "-o"])
        .arg(&rel));
    assert!(rel.join(host().0).is_dir() && !rel.join("s390x").exists());
}
