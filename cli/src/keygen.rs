//! `verdict keygen`: writes a gateway's signing key pair.
//!
//! The private key is PKCS#8 PEM with mode 0600, the public key SPKI PEM; both are what
//! `openssl pkey` understands. Only the key id and paths are printed, never key material.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use verdict_proto::keys::write_keypair;
use verdict_proto::SecretKey;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write `verdict.key` (private, 0600) and `verdict.pub` into.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing key pair (the old private key is lost).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let key = SecretKey::generate();
    let (private, public) = write_keypair(&args.out, &key, args.force)?;
    println!("key_id      {}", key.public().key_id());
    println!("private key {} (mode 0600)", private.display());
    println!("public key  {}", public.display());
    Ok(ExitCode::SUCCESS)
}
