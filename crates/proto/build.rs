//! Compiles every contract under `proto/shop` with protox (no protoc on the machine) into tonic
//! clients and servers, and writes the encoded file descriptor set that reflection and the
//! validation layer read at run time.

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let vendor_root = proto_root.join("vendor");

    let mut files = Vec::new();
    collect_protos(&proto_root.join("shop"), &mut files)?;
    files.sort();

    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([&proto_root, &vendor_root])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(&files)?;

    // The encoded set keeps option extensions (buf.validate rules, google.api.http) that a
    // round trip through prost_types::FileDescriptorSet would drop: reflection, validation and
    // transcoding read these bytes.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("shop_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptor_set = compiler.file_descriptor_set();

    // `prost::Name` on every message: events are routed and dead-lettered by full type name.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("_includes.rs")
        .compile_fds_with_config(descriptor_set, config)?;
    Ok(())
}

/// Every `.proto` below `dir`, recursively.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
