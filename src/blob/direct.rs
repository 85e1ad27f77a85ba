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
//! A file no larger than one block ([`DIRECT_MIN_BYTES`]) never goes past
//! the cache: for the many small inputs and outputs of a batch job a direct
//! write would wait for the disk where the cache answers at once, and a
//! direct read of a file just written would first wait for its writeback.

use std::alloc::Layout;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Alignment of buffers, offsets and lengths for direct I/O: the largest
/// logical block size in common use.
pub const ALIGN: usize = 4096;

/// Bytes staged before they go to the disk in one write.
const STAGE_BYTES: usize = 1 << 20;

/// Files larger than this are written and read past the page cache;
/// smaller ones through it.
pub const DIRECT_MIN_BYTES: u64 = STAGE_BYTES as u64;

/// Bytes a buffered (fallback) writer writes before it asks the kernel to
/// start writing them out, so a final fsync waits for little.
const WRITEBACK_BYTES: u64 = 32 << 20;

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A heap buffer aligned for direct I/O. Its bytes past `len` are not
/// initialised (a 1 MiB buffer per small file zeroed first cost more than
/// the file), so it is only ever read up to `len`.
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
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Aligned { ptr, cap, len: 0 }
    }

    /// Appends as much of `data` as fits; how much that was.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = (self.cap - self.len).min(data.len());
        // SAFETY: `len + n <= cap` bytes are allocated; the source is
        // another allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n);
        }
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == self.cap
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The content followed by zeros up to the next aligned length.
    fn padded(&mut self) -> &[u8] {
        let end = round_up(self.len);
        // SAFETY: `end <= cap` (cap is aligned); the tail is set before it
        // is read.
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, end - self.len);
            std::slice::from_raw_parts(self.ptr.as_ptr(), end)
        }
    }

    /// Reads into the buffer from `offset` until it is full or the file
    /// ends.
    fn fill_from(&mut self, file: &File, offset: u64) -> io::Result<()> {
        self.len = 0;
        // SAFETY: `cap` bytes are allocated at `ptr`.
        self.len = unsafe { pread_full(file, self.ptr.as_ptr(), self.cap, offset)? };
        Ok(())
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("a valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Turns direct I/O on or off for an open file; Err where the filesystem
/// refuses it.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = match on {
        true => flags | libc::O_DIRECT,
        false => flags & !libc::O_DIRECT,
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `data` at `offset`, falling back to buffered I/O once if the
/// filesystem refuses a direct write.
fn write_at(file: &File, data: &[u8], offset: u64, direct: &mut bool) -> io::Result<()> {
    match file.write_all_at(data, offset) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false)?;
            *direct = false;
            file.write_all_at(data, offset)
        }
        other => other,
    }
}

/// Up to `want` bytes of `file` (`size` bytes long) from `offset` (fewer
/// at its end), past the page cache if the file is larger than
/// [`DIRECT_MIN_BYTES`].
pub fn read_at(file: &File, size: u64, offset: u64, want: usize) -> io::Result<Vec<u8>> {
    if size > DIRECT_MIN_BYTES && set_direct(file, true).is_ok() {
        let start = offset - offset % ALIGN as u64;
        let skip = (offset - start) as usize;
        let mut buf = Aligned::new(skip + want);
        match buf.fill_from(file, start) {
            Ok(()) => {
                let got = buf.filled();
                let end = got.len().min(skip + want);
                return Ok(got[skip.min(end)..end].to_vec());
            }
            // Took the flag, refused the read: read through the cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => set_direct(file, false)?,
            Err(e) => return Err(e),
        }
    }
    let mut data = Vec::with_capacity(want);
    // SAFETY: the vector has room for `want` bytes, and holds only those
    // read.
    unsafe {
        let n = pread_full(file, data.as_mut_ptr(), want, offset)?;
        data.set_len(n);
    }
    Ok(data)
}

/// Reads `len` bytes into `ptr` from `offset`, fewer where the file ends;
/// how many. No reference to the bytes not yet read is ever made, so the
/// memory need not be initialised.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn pread_full(file: &File, ptr: *mut u8, len: usize, offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < len {
        let n = libc::pread(
            file.as_raw_fd(),
            ptr.add(done).cast(),
            len - done,
            (offset + done as u64) as libc::off_t,
        );
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
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
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(DirectWriter {
            file: Some(file),
            // On once the file outgrows one block.
            direct: false,
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
            let n = stage.push(data);
            self.written += n as u64;
            data = &data[n..];
            if stage.is_full() && !data.is_empty() {
                // More than a block: from here on past the cache. (A file
                // of exactly one block is written at the finish.)
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
            if let Some(file) = &self.file {
                // A filesystem that refuses the flag is written through
                // the cache, as before.
                self.direct = set_direct(file, true).is_ok();
            }
            self.thread = Some(self.start()?);
        }
        let Some(worker) = self.thread.as_ref() else {
            return Err(io::Error::other("the blob writer did not start"));
        };
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
        let file = self.file.take().ok_or_else(gone)?;
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
        // Gone only after a failure already reported.
        let file = self.file.take().ok_or_else(gone)?;
        if let Some(mut tail) = tail {
            let offset = self.written - tail.len as u64;
            if self.direct {
                write_at(&file, tail.padded(), offset, &mut self.direct)?;
                // The last block went out padded.
                file.set_len(self.written)?;
            } else {
                file.write_all_at(tail.filled(), offset)?;
            }
        }
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

/// The file is not here: its writer failed (and said so) earlier.
fn gone() -> io::Error {
    io::Error::other("the file's writer stopped on an earlier error")
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

    fn read_file(path: &Path, offset: u64, want: usize) -> Vec<u8> {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        read_at(&file, size, offset, want).unwrap()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    #[test]
    fn what_is_written_in_any_pieces_reads_back_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, under a block, a block exactly, a stage and a bit, several
        // stages with a ragged end.
        for size in [
            0,
            3,
            ALIGN,
            STAGE_BYTES,
            STAGE_BYTES + 5,
            2 * STAGE_BYTES,
            3 * STAGE_BYTES + 12_345,
        ] {
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
                let got = read_file(&path, offset as u64, want);
                let end = (offset + want).min(size);
                assert_eq!(got, &data[offset.min(end)..end], "size {size} at {offset}");
            }
        }
    }

    /// Pages of `path` in the page cache.
    fn resident_pages(path: &Path) -> usize {
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a read-only shared mapping of a file we do not change,
        // unmapped below; mincore only reports on it.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut pages = vec![0u8; len.div_ceil(4096)];
            assert_eq!(libc::mincore(map, len, pages.as_mut_ptr()), 0);
            libc::munmap(map, len);
            pages.iter().filter(|p| **p & 1 == 1).count()
        }
    }

    #[test]
    fn a_large_file_goes_past_the_page_cache_and_a_small_one_through_it() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: statfs fills the struct it is given.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut fs) }, 0);
        if fs.f_type == libc::TMPFS_MAGIC {
            eprintln!("skipped: the temporary directory is tmpfs, whose files are all in memory");
            return;
        }
        let write = |name: &str, size: usize| {
            let path = dir.path().join(name);
            let mut w = DirectWriter::create(&path, false).unwrap();
            w.write(&pattern(size)).unwrap();
            drop(w.finish().unwrap());
            path
        };
        let big = write("big", 4 * STAGE_BYTES + 100);
        let small = write("small", 64 << 10);
        assert_eq!(
            resident_pages(&big),
            0,
            "the large file went through the cache"
        );
        assert_eq!(
            resident_pages(&small),
            16,
            "the small file skipped the cache"
        );
        // Reading the large one leaves nothing cached either.
        assert_eq!(
            read_file(&big, 5, STAGE_BYTES),
            &pattern(STAGE_BYTES + 5)[5..]
        );
        assert_eq!(resident_pages(&big), 0);
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
