//! The checked-in generated code is what the proto gives today.

use std::path::Path;

#[test]
fn generated_code_matches_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("oom-probe-cri-gen-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let descriptors = protox::compile([root.join("proto/api.proto")], [root.join("proto")])
        .expect("proto/api.proto compiles");
    tonic_prost_build::configure()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)
        .expect("code generation");
    let fresh = std::fs::read_to_string(out.join("runtime.v1.rs")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let checked_in_path = root.join("src/runtime.v1.rs");
    if std::env::var_os("CRI_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::write(&checked_in_path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        fresh == checked_in,
        "cri-api/src/runtime.v1.rs is not what proto/api.proto generates; \
         run `CRI_REGENERATE=1 cargo test -p oom-probe-cri` and commit the result"
    );
}
