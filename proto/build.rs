//! Compiles `verdict/v1/*.proto` with `protox` (pure Rust, so no system `protoc` is needed on a
//! fresh machine) and generates prost messages and tonic services from the descriptor set. The
//! descriptor set is also written to `OUT_DIR` for gRPC server reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "verdict/v1/event.proto",
    "verdict/v1/query.proto",
    "verdict/v1/admin.proto",
    "verdict/v1/witness.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("verdict_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
