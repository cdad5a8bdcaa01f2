//! Compiles the tests' own proto (`proto/echo.proto`) with tonic-build, into a client and a
//! server that `tests/grpc_channel.rs` uses as a user's generated code would be used.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::configure().compile_protos(&["proto/echo.proto"], &["proto"])
}
