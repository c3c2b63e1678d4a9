//! Builds the eBPF object (gateway-ebpf) for bpfel-unknown-none with nightly and bpf-linker, and
//! leaves it in OUT_DIR for `include_bytes_aligned!`. Needs `rustup component add rust-src
//! --toolchain nightly` and `cargo install bpf-linker@0.10.3 --locked` (see README).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("gateway-userspace has no parent directory"))?
        .join("gateway-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    println!("cargo:rerun-if-changed=../gateway-common/src");
    aya_build::build_ebpf(
        [aya_build::Package { name: "gateway-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
