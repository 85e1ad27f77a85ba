//! Blob content written and read past the page cache (`O_DIRECT`).
//!
//! A blob store streams gigabytes that are rarely read back right away.
//! Through the page cache each byte is copied once more by the CPU, into
//! pages that must first be found (and on a VM whose free memory the host
//! reclaims, faulted in from the host: that copy then costs several times
//! the hashing), and the blob pushes the event log's working set out of
//! memory. Direct I/O hands the buffer to the disk instead. Where the
//! filesystem refuses it (tmpfs on older kernels, some FUSE mounts), the
//! same calls fall back to ordinary I/O; nothing else changes.
//!
//! Writes are staged in aligned blocks and handed to a thread of their own,
//! so the disk's time overlaps the caller's hashing of the next bytes.

use std::alloc::Layout;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Alignment of buffers, offsets and lengths for direct I/O: the largest
/// logical block size in common use.
pub const ALIGN: usize = 4096;

/// Bytes staged before they go to the disk in one write.
const STAGE_BYTES: usize = 1 << 20;

/// Bytes a buffered (fallback) writer writes before it asks the kernel to
/// start writing them out, so a final fsync waits for little.
const WRITEBACK_BYTES: u64 = 32 << 20;

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A heap buffer aligned for direct I/O.
struct Aligned {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer is plain owned memory; only its owner touches it.
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(cap: usize) -> Self {
        let cap = round_up(cap.max(1));
        let layout = Layout::from_size_align(cap, ALIGN).expect("a valid layout");
        // SAFETY: the layout has a non-zero size; zeroed so that padding
        // past the content is never uninitialised memory.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Aligned { ptr, cap, len: 0 }
    }

    fn whole(&mut self) -> &mut [u8] {
        // SAFETY: `cap` bytes were allocated (and initialised) for `ptr`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: `len <= cap`, initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The content followed by zeros up to the next aligned length.
    fn padded(&mut self) -> &[u8] {
        let (len, end) = (self.len, round_up(self.len));
        self.whole()[len..end].fill(0);
        &self.whole()[..end]
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("a valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Opens `path` with `options` for direct I/O, or without it where the
/// filesystem refuses; whether direct I/O is on.
fn open(path: &Path, options: &mut std::fs::OpenOptions) -> io::Result<(File, bool)> {
    match options.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((options.open(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Turns direct I/O off on an open file (a filesystem that took the flag
/// at open and then refuses the I/O).
fn drop_direct(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `data` at `offset`, falling back to buffered I/O once if the
/// filesystem refuses a direct write.
fn write_at(file: &File, data: &[u8], offset: u64, direct: &mut bool) -> io::Result<()> {
    match file.write_all_at(data, offset) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            drop_direct(file)?;
            *direct = false;
            file.write_all_at(data, offset)
        }
        other => other,
    }
}

/// Up to `want` bytes of `path` from `offset` (fewer at its end).
pub fn read_at(path: &Path, offset: u64, want: usize) -> io::Result<Vec<u8>> {
    let (file, mut direct) = open(path, std::fs::OpenOptions::new().read(true))?;
    if direct {
        let start = offset - offset % ALIGN as u64;
        let skip = (offset - start) as usize;
        let mut buf = Aligned::new(skip + want);
        match fill(&file, buf.whole(), start) {
            Ok(n) => {
                buf.len = n;
                let end = n.min(skip + want);
                return Ok(buf.filled()[skip.min(end)..end].to_vec());
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                drop_direct(&file)?;
                direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    debug_assert!(!direct);
    let mut data = vec![0u8; want];
    let n = fill(&file, &mut data, offset)?;
    data.truncate(n);
    Ok(data)
}

/// Reads into `buf` from `offset` until it is full or the file ends; the
/// bytes read.
fn fill(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A new file written front to back, past the page cache where it can be.
pub struct DirectWriter {
    /// None once the writer thread owns it.
    file: Option<File>,
    direct: bool,
    /// Ask for writeback as the file grows (buffered fallback only).
    writeback: bool,
    stage: Option<Aligned>,
    /// Bytes taken so far; the stage starts at `written - stage.len`.
    written: u64,
    thread: Option<Worker>,
}

struct Worker {
    tx: SyncSender<(Aligned, u64)>,
    spare: Receiver<Aligned>,
    handle: JoinHandle<io::Result<(File, bool)>>,
}

impl DirectWriter {
    /// Creates `path` (it must not exist). `writeback`: the file will be
    /// fsynced at its end, so start writing it out early if the page cache
    /// holds it.
    pub fn create(path: &Path, writeback: bool) -> io::Result<Self> {
        let (file, direct) = open(
            path,
            std::fs::OpenOptions::new().write(true).create_new(true),
        )?;
        Ok(DirectWriter {
            file: Some(file),
            direct,
            writeback,
            stage: None,
            written: 0,
            thread: None,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let stage = self.stage.get_or_insert_with(|| Aligned::new(STAGE_BYTES));
            let room = stage.cap - stage.len;
            let n = room.min(data.len());
            let at = stage.len;
            stage.whole()[at..at + n].copy_from_slice(&data[..n]);
            stage.len += n;
            self.written += n as u64;
            data = &data[n..];
            if stage.len == stage.cap {
                self.hand_off()?;
            }
        }
        Ok(())
    }

    /// Sends the full stage to the writer thread (started on first use,
    /// so a small file never starts one) and takes a spare buffer.
    fn hand_off(&mut self) -> io::Result<()> {
        let Some(stage) = self.stage.take() else {
            return Ok(());
        };
        let offset = self.written - stage.len as u64;
        if self.thread.is_none() {
            self.thread = Some(self.start()?);
        }
        let worker = self.thread.as_ref().expect("started above");
        if worker.tx.send((stage, offset)).is_err() {
            // The thread stopped on an error; it is the one to report.
            return Err(self
                .join()?
                .err()
                .unwrap_or_else(|| io::Error::other("the blob writer stopped")));
        }
        self.stage = worker.spare.try_recv().ok().map(|mut b| {
            b.len = 0;
            b
        });
        Ok(())
    }

    fn start(&mut self) -> io::Result<Worker> {
        let file = self.file.take().expect("the file until the thread starts");
        let (mut direct, writeback) = (self.direct, self.writeback);
        // One block queued beside the one being written: the caller runs
        // at most a block ahead of the disk.
        let (tx, rx) = sync_channel::<(Aligned, u64)>(1);
        let (spare_tx, spare) = sync_channel::<Aligned>(2);
        let handle = std::thread::Builder::new()
            .name("blob-write".into())
            .stack_size(64 << 10)
            .spawn(move || -> io::Result<(File, bool)> {
                let mut hinted = 0u64;
                for (mut block, offset) in rx {
                    write_at(&file, block.padded(), offset, &mut direct)?;
                    let end = offset + block.len as u64;
                    if writeback && !direct && end - hinted >= WRITEBACK_BYTES {
                        start_writeback(&file, hinted, end - hinted);
                        hinted = end;
                    }
                    let _ = spare_tx.try_send(block);
                }
                Ok((file, direct))
            })?;
        Ok(Worker { tx, spare, handle })
    }

    /// Stops the writer thread and takes the file back; the thread's error
    /// if it failed.
    fn join(&mut self) -> io::Result<Result<(), io::Error>> {
        let Some(worker) = self.thread.take() else {
            return Ok(Ok(()));
        };
        drop(worker.tx);
        match worker.handle.join() {
            Ok(Ok((file, direct))) => {
                self.file = Some(file);
                self.direct = direct;
                Ok(Ok(()))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(_) => Err(io::Error::other("the blob writer thread panicked")),
        }
    }

    /// Writes what is staged and waits for every write; the file, cut to
    /// the bytes written (the last block went out padded).
    pub fn finish(mut self) -> io::Result<File> {
        let tail = self.stage.take();
        self.join()??;
        let file = self.file.take().expect("the file is back from the thread");
        if let Some(mut tail) = tail {
            let offset = self.written - tail.len as u64;
            write_at(&file, tail.padded(), offset, &mut self.direct)?;
        }
        file.set_len(self.written)?;
        Ok(file)
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        // An abandoned writer: let its thread end; the caller removes the
        // file.
        let _ = self.join();
    }
}

fn start_writeback(file: &File, from: u64, len: u64) {
    // SAFETY: a plain syscall on our own open descriptor; it only starts
    // writeback of the range and never blocks on it.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    #[test]
    fn what_is_written_in_any_pieces_reads_back_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, under a block, a block exactly, a stage and a bit, several
        // stages with a ragged end.
        for size in [0, 3, ALIGN, STAGE_BYTES + 5, 3 * STAGE_BYTES + 12_345] {
            let data = pattern(size);
            let path = dir.path().join(format!("f{size}"));
            let mut w = DirectWriter::create(&path, true).unwrap();
            // Pieces that never line up with the blocks.
            for piece in data.chunks(70_001) {
                w.write(piece).unwrap();
            }
            assert_eq!(w.written(), size as u64);
            drop(w.finish().unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), data, "size {size}");
            for (offset, want) in [
                (0, 10),
                (1, 4096),
                (4095, 2),
                (size / 2, 100_000),
                (size, 5),
            ] {
                let got = read_at(&path, offset as u64, want).unwrap();
                let end = (offset + want).min(size);
                assert_eq!(got, &data[offset.min(end)..end], "size {size} at {offset}");
            }
        }
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"keep").unwrap();
        assert!(DirectWriter::create(&path, false).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }

    #[test]
    fn a_failed_write_is_reported_not_lost() {
        // /dev/full refuses every write with ENOSPC, as a full disk does.
        let mut w = DirectWriter {
            file: Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            ),
            direct: false,
            writeback: false,
            stage: None,
            written: 0,
            thread: None,
        };
        let mut failed = None;
        for _ in 0..8 {
            if let Err(e) = w.write(&pattern(STAGE_BYTES)) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    }
}
