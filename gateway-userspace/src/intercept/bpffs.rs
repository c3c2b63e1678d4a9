//! bpffs helpers: make sure a bpf filesystem is mounted where we pin, and clean pin directories.
use std::{ffi::CString, path::Path};

/// bpffs magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Creates `pin_dir`, first mounting bpffs on /sys/fs/bpf when neither `pin_dir`'s nearest
/// existing ancestor nor /sys/fs/bpf is a bpf filesystem (a fresh machine often has none).
pub fn ensure_pin_dir(pin_dir: &Path) -> std::io::Result<()> {
    let mut probe = pin_dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    if !is_bpffs(probe) {
        let base = Path::new("/sys/fs/bpf");
        if pin_dir.starts_with(base) && !is_bpffs(base) {
            std::fs::create_dir_all(base)?;
            let src = CString::new("bpf").map_err(std::io::Error::other)?;
            let dst = CString::new("/sys/fs/bpf").map_err(std::io::Error::other)?;
            // SAFETY: valid C strings; mount(2) with no data.
            let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            tracing::info!("mounted bpffs on /sys/fs/bpf (it was not mounted)");
        } else if !pin_dir.starts_with(base) {
            return Err(std::io::Error::other(format!(
                "{} is not on a bpf filesystem (mount -t bpf bpf <dir>)",
                probe.display()
            )));
        }
    }
    std::fs::create_dir_all(pin_dir.join("links"))
}

/// Removes every pinned object nodegate creates under `pin_dir` and the directory itself.
/// Unpinning a link detaches its program once no process holds it open.
pub fn remove_pins(pin_dir: &Path) -> std::io::Result<()> {
    let links = pin_dir.join("links");
    if links.exists() {
        for e in std::fs::read_dir(&links)?.flatten() {
            std::fs::remove_file(e.path())?;
        }
        std::fs::remove_dir(&links)?;
    }
    for name in gateway_common::maps::ALL {
        let p = pin_dir.join(name);
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    if pin_dir.exists() {
        std::fs::remove_dir(pin_dir)?;
    }
    Ok(())
}
