use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::pkg::verify;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: PkgCommand,
}

#[derive(Subcommand, Debug)]
enum PkgCommand {
    /// Check package files (.rpm, .apk, .deb) against trusted keys; print what verified
    #[command(
        after_help = "rpm: OpenPGP header signatures (RSA, EdDSA, ECDSA; v4 and v3 \
packets), the SHA-256/SHA-1 header digests, the PAYLOADDIGEST and every file's digest; an \
unsigned package fails. apk: the RSA signature (PEM public key), the control checksum and the \
datahash. deb: a debsig _gpgorigin signature if the package has one (Debian signs its Release \
files, not its .debs).\n\nExit status: 0 when every file verified, 1 otherwise.\n\n\
Example:\n  osbuilder pkg verify --key RPM-GPG-KEY-fedora-31-primary rpm-sign-4.15.1-1.fc31.x86_64.rpm"
    )]
    Verify {
        /// A trusted key: OpenPGP (armored or binary) for rpm and deb, PEM RSA for apk
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Package files
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        PkgCommand::Verify { keys, files } => {
            let mut failed = 0;
            for f in &files {
                match verify::verify_file(f, &keys) {
                    Ok(r) => {
                        println!("{}: OK ({} {})", f.display(), r.format.name(), r.package);
                        for c in &r.checks {
                            println!("  {c}");
                        }
                    }
                    Err(e) if crate::error::is_refused(&e) => return Err(e),
                    Err(e) => {
                        println!("{}: FAILED", f.display());
                        eprintln!("osbuilder: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} package files did not verify", files.len());
            }
            Ok(())
        }
    }
}
