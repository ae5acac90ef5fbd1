//! The Kubernetes Container Runtime Interface, `runtime.v1` (gRPC over the
//! runtime's Unix socket), as prost messages and tonic clients and servers.
//!
//! The code in `runtime.v1.rs` is generated from `proto/api.proto`
//! (`k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`, Apache-2.0, as shipped by
//! the k8s-cri 0.11 crate) and kept in the tree, so building oom-probe needs
//! no `protoc` and no build script. `tests/generated.rs` regenerates it with
//! protox and tonic-prost-build (pure Rust) and fails if it differs; run it
//! with `CRI_REGENERATE=1` to rewrite the file after changing the proto.

/// `package runtime.v1`: messages, `runtime_service_client`,
/// `image_service_client` and their servers.
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod v1 {
    include!("runtime.v1.rs");
}
