//! The one place the workspace calls `unsafe` code: mapping a snapshot file
//! read-only for its restore (`docs/adr/0005-restore-without-building-the-heap.md`,
//! point 6). The workspace lint is `unsafe_code = "deny"`; [`map_snapshot`]
//! alone allows it.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

/// Maps `file`, a complete snapshot in the pod's own snapshot directory,
/// read-only (on tmpfs its pages are the file's own: no copy, no fresh
/// memory). The pages are mapped in as the checking threads first read
/// them, in parallel; populating them all in the mapping call took one
/// thread about 0.1 s for 1 GiB, before any check could start.
#[allow(unsafe_code)]
pub(super) fn map_snapshot(file: &File) -> io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the bytes behind the returned
    // slice change (or fault with SIGBUS) if the file is written or
    // truncated while it is mapped. The mapping is read-only and private to
    // this process, of a file in the pod's own snapshot directory (the
    // SDK's, not shared with other pods); the SDK writes a snapshot under a
    // temporary name and never writes it again once it is complete: after a
    // restore it only renames it (`sessions.snapshot.restored`) and unlinks
    // it, and an unlinked file's pages stay until the last slice of the
    // mapping is dropped. A file truncated or rewritten by something else
    // while it is mapped is outside the contract (ADR 0005, point 6); the
    // chunk checksums are checked on the mapping before any record is
    // installed.
    unsafe { MmapOptions::new().map(file) }
}
