//! The access log's writer: lines are appended to a buffer in memory, and a thread of
//! its own writes that buffer to the sink (stderr) in batches.
//!
//! **Why.** Written through `log` and `env_logger`, each line cost a `write` system
//! call on the worker that answered the request, under stderr's lock: at the default
//! level (`info`) that was the largest single cost of a signature after the kernel's
//! TCP path (`perf`: 11 % of the instance's samples). Worse, a worker waited for
//! the sink: a full pipe or a stalled disk stopped it from answering anyone.
//!
//! **How.** A worker takes a mutex that nobody holds for more than a few copies (the
//! writer thread swaps the buffer out; it never holds the lock while writing), and
//! appends its line. The writer thread sleeps until the buffer stops being empty,
//! lingers [`LINGER`] so that more lines join the batch, and writes them with one
//! system call: one wake-up per batch instead of a write per line, and lines reach
//! the sink within milliseconds. When the sink is slower than the requests, the
//! buffer grows to its capacity and further lines are **dropped and counted**
//! (`wxjssdk_access_log_dropped_total`) rather than making a worker wait: the log of
//! a service that answers beats the complete log of one that does not. The writer
//! says in the log itself how many lines it lost once it catches up.
//!
//! The writer knows nothing of the lines' format: the access log renders its lines
//! (and the notice of lost lines) into the buffer, so that another format (JSON,
//! request ids) changes [`super`] only.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::metrics;

/// How long the writer waits, once a line is pending, for more to join the batch.
/// Short enough that a line is on disk before anyone looks for it (tests read the
/// log right after a request), long enough that a busy worker wakes the writer a few
/// hundred times a second rather than once per request.
const LINGER: Duration = Duration::from_millis(2);

/// Renders the notice of `lost` dropped lines into the buffer, in the log's format.
pub(crate) type Notice = Box<dyn Fn(&mut Vec<u8>, u64) + Send>;

/// The workers' end: cheap to clone (one per worker), appends lines.
#[derive(Clone)]
pub(crate) struct LineWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Signalled when `pending` stops being empty, and on close.
    wake: Condvar,
    /// Bytes `pending` may hold before lines are dropped.
    capacity: usize,
    dropped: AtomicU64,
    closing: AtomicBool,
}

impl LineWriter {
    /// Starts the writer thread over `sink`; at most `capacity` bytes wait for it.
    pub(crate) fn spawn(
        sink: impl Write + Send + 'static,
        capacity: usize,
        notice: Notice,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(capacity.min(64 * 1024))),
            wake: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let shared = shared.clone();
                move || write_batches(&shared, sink, &notice)
            })?;
        Ok((Self { shared }, thread))
    }

    /// Appends the line that `render` writes, unless the buffer is full (the sink has
    /// fallen behind): then the line is dropped and counted, and `false` returned.
    /// Never waits for the sink.
    pub(crate) fn append(&self, render: impl FnOnce(&mut Vec<u8>)) -> bool {
        let was_empty = {
            let mut pending = self.shared.lock();
            if pending.len() >= self.shared.capacity {
                drop(pending);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::access_log_dropped();
                return false;
            }
            let was_empty = pending.is_empty();
            render(&mut pending);
            was_empty
        };
        // Only the first line of a batch wakes the writer: the others find it awake.
        if was_empty {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Lines dropped so far (the metric counts them for the process, across servers).
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer thread to write what is pending and stop.
    pub(crate) fn close(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // The last workers' end (the writer thread holds the other reference): let
        // the thread write what is left and end.
        if Arc::strong_count(&self.shared) <= 2 {
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    /// The buffer, even if a thread panicked while holding it: its bytes are still
    /// whole lines or a torn one, and a torn log line beats a dead worker.
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer thread: waits for lines, takes the whole buffer, writes it; until closed
/// or every [`LineWriter`] is gone.
fn write_batches(shared: &Arc<Shared>, mut sink: impl Write, notice: &Notice) {
    let mut batch = Vec::with_capacity(shared.capacity.min(64 * 1024));
    let mut reported = 0;
    loop {
        {
            let mut pending = shared.lock();
            while pending.is_empty() && !shared.closing.load(Ordering::Relaxed) {
                // Every workers' end is gone (a server stopped without a close).
                if Arc::strong_count(shared) == 1 {
                    return;
                }
                // Woken by the first line, by close, by the last end dropped, and now
                // and then in case that last wake-up raced with this wait.
                pending = shared
                    .wake
                    .wait_timeout(pending, Duration::from_secs(1))
                    .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            }
        }
        std::thread::sleep(LINGER);
        // Swap, so that the buffers' allocations are reused and the lock is held for
        // no longer than that.
        std::mem::swap(&mut *shared.lock(), &mut batch);
        let lost = shared.dropped.load(Ordering::Relaxed);
        if lost > reported {
            notice(&mut batch, lost - reported);
            reported = lost;
        }
        // A sink that fails (closed stderr) loses these lines; there is nowhere to say so.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        if shared.closing.load(Ordering::Relaxed) && shared.lock().is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink that reports each write and then blocks until the test lets it go: the
    /// slow disk or full pipe of a real deployment, under the test's control.
    struct StalledSink {
        written: Arc<Mutex<Vec<u8>>>,
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    }

    impl Write for StalledSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) {
        move |out| writeln!(out, "request {n:04}").unwrap()
    }

    #[test]
    fn a_stalled_sink_makes_lines_drop_and_be_counted_never_wait() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let sink = StalledSink {
            written: written.clone(),
            entered: entered_tx,
            release: release_rx,
        };
        // Room for 10 lines of 13 bytes ("request 0001\n") before the cap is reached.
        let notice: Notice = Box::new(|out, lost| writeln!(out, "lost {lost}").unwrap());
        let (writer, thread) = LineWriter::spawn(sink, 130, notice).unwrap();

        assert!(writer.append(line(0)));
        entered.recv().unwrap(); // the writer thread is now stuck in the sink
                                 // With the sink stuck, every append still returns at once: ten fit, the rest
                                 // are dropped.
        let kept: Vec<bool> = (1..=25).map(|n| writer.append(line(n))).collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), 10, "{kept:?}");
        assert!(kept[..10].iter().all(|k| *k) && kept[10..].iter().all(|k| !*k));
        assert_eq!(writer.dropped(), 15);

        // The sink recovers: what was kept is written, with the count of what was not.
        writer.close();
        drop(release); // every later write goes through at once
        thread.join().unwrap();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let requests: Vec<&str> = text.lines().filter(|l| l.starts_with("request")).collect();
        let expected: Vec<String> = (0..=10).map(|n| format!("request {n:04}")).collect();
        assert_eq!(requests, expected, "{text}");
        assert!(text.contains("lost 15\n"), "{text}");
    }

    #[test]
    fn lines_reach_the_sink_in_order_without_a_close() {
        let written = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let notice: Notice = Box::new(|_, _| {});
        let (writer, thread) = LineWriter::spawn(Shared(written.clone()), 1 << 20, notice).unwrap();
        for n in 0..1000 {
            assert!(writer.append(line(n)));
        }
        // The workers' ends dropped (a server that stopped): the thread writes what
        // is left and ends by itself.
        drop(writer);
        thread.join().unwrap();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|n| format!("request {n:04}\n")).collect();
        assert_eq!(text, expected);
    }
}
