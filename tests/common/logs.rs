//! The one tracing subscriber of a test binary, installed by the first test
//! that logs: every test's lines go to the test output (`RUST_LOG` filters
//! them, `certkeeper=debug` by default), and a test run through [`captured`]
//! also gets every line of its own run, at every level and from every crate
//! (`log` records included), for the checks that no secret is ever logged.
//!
//! A test binary runs many tests side by side in one process, so a capture
//! keeps the lines of its own threads only: the test's thread and the
//! blocking-pool threads of the runtime [`captured`] builds for it. Lines of
//! the other tests, on other threads, never reach it.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

thread_local! {
    /// The capture that this thread's log lines go to, if any.
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// What the log lines of one [`captured`] run wrote.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap()
    }
}

/// Writes a line into the capture of the thread that logged it.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with_borrow(|capture| {
            if let Some(Captured(buffer)) = capture {
                buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ThreadCapture {
    type Writer = ThreadCapture;
    fn make_writer(&'a self) -> Self::Writer {
        ThreadCapture
    }
}

/// Installs the process-wide subscriber (and the bridge from the `log`
/// crate) if no test did yet.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let output = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| "certkeeper=debug".into()),
            );
        let capture = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(ThreadCapture)
            .with_filter(filter_fn(|_| {
                CAPTURE.with_borrow(|capture| capture.is_some())
            }));
        tracing_subscriber::registry()
            .with(output)
            .with(capture)
            .try_init()
            .expect("no other global tracing subscriber in a test binary");
    });
}

/// Sets this thread's capture, and puts back the one before when dropped.
struct Marked(Option<Captured>);

impl Marked {
    fn new(capture: Captured) -> Self {
        Self(CAPTURE.replace(Some(capture)))
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        CAPTURE.set(self.0.take());
    }
}

/// Runs an async test on a runtime of its own (a current-thread runtime,
/// as `#[tokio::test]` builds) and hands it the capture of every line
/// logged on that runtime's threads while it runs.
pub fn captured<F: Future>(test: impl FnOnce(Captured) -> F) -> F::Output {
    install();
    let captured = Captured::default();
    let for_threads = captured.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || CAPTURE.set(Some(for_threads.clone())))
        .on_thread_stop(|| CAPTURE.set(None))
        .build()
        .unwrap();
    let _marked = Marked::new(captured.clone());
    runtime.block_on(test(captured))
}
