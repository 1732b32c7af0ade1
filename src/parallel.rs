//! One worker pool for the package pipeline: downloads, package verification and
//! decompression run on several threads, while what must happen in order (extraction in
//! dependency order, results in plan order) happens on the caller's thread.
//!
//! [`ordered`] hands items to `jobs` workers in input order, keeps at most `window` results
//! waiting, and gives each result to the consumer in input order. The first failure (a
//! producer's, in input order, or the consumer's) stops the hand-out of new items and is
//! returned; items already started finish and are dropped. It replaces three hand-written
//! copies of the same `AtomicUsize` + `Mutex<Option<Result>>` pattern.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use anyhow::Result;

/// The number of worker threads for CPU-bound work: one per core.
pub fn cpu_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

struct State<T> {
    /// Next item to hand out.
    next: usize,
    /// Items the consumer has taken.
    consumed: usize,
    /// Results waiting for the consumer, by item index.
    ready: BTreeMap<usize, Result<T>>,
    /// Stop handing out items (a failure, or the consumer gave up).
    stop: bool,
}

/// Run `produce` over `items` on `jobs` threads, and `consume` on this thread in input
/// order. At most `window` items are produced ahead of the consumer (bounding memory when
/// results are large, e.g. decompressed payloads). See the module documentation for how
/// failures stop the work.
pub fn ordered<I, T, P, C>(
    items: &[I],
    jobs: usize,
    window: usize,
    produce: P,
    mut consume: C,
) -> Result<()>
where
    I: Sync,
    T: Send,
    P: Fn(usize, &I) -> Result<T> + Sync,
    C: FnMut(usize, T) -> Result<()>,
{
    if items.is_empty() {
        return Ok(());
    }
    let window = window.max(1);
    let jobs = jobs.clamp(1, items.len());
    let state = Mutex::new(State {
        next: 0,
        consumed: 0,
        ready: BTreeMap::new(),
        stop: false,
    });
    // Workers wait on `more` for room in the window; the consumer waits on `done`.
    let more = Condvar::new();
    let done = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut st = lock();
                        loop {
                            if st.stop || st.next >= items.len() {
                                return;
                            }
                            if st.next < st.consumed.saturating_add(window) {
                                break;
                            }
                            st = more.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        st.next += 1;
                        st.next - 1
                    };
                    // A panicking producer must not leave the consumer waiting forever.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        produce(i, &items[i])
                    }))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
                    let mut st = lock();
                    if r.is_err() {
                        st.stop = true;
                    }
                    st.ready.insert(i, r);
                    done.notify_all();
                    more.notify_all();
                }
            });
        }
        // However the consumer ends (done, failed or panicking), the workers must stop
        // waiting for room, or the scope would never end.
        struct StopOnExit<'a, T>(&'a Mutex<State<T>>, &'a Condvar);
        impl<T> Drop for StopOnExit<'_, T> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
                self.1.notify_all();
            }
        }
        let _stop = StopOnExit(&state, &more);
        (|| {
            for i in 0..items.len() {
                let r = {
                    let mut st = lock();
                    loop {
                        if let Some(r) = st.ready.remove(&i) {
                            st.consumed = i + 1;
                            more.notify_all();
                            break r;
                        }
                        st = done.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                };
                consume(i, r?)?;
            }
            Ok(())
        })()
    })
}

/// `produce` over every item on `jobs` threads; the results in input order, or the first
/// failure in input order (hand-out stops at the first failure).
pub fn map<I, T, P>(items: &[I], jobs: usize, produce: P) -> Result<Vec<T>>
where
    I: Sync,
    T: Send,
    P: Fn(usize, &I) -> Result<T> + Sync,
{
    let mut out = Vec::with_capacity(items.len());
    ordered(items, jobs, usize::MAX, produce, |_, t| {
        out.push(t);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_come_in_input_order_within_the_window() {
        let items: Vec<u64> = (0..50).collect();
        let running = AtomicUsize::new(0);
        let mut seen = Vec::new();
        ordered(
            &items,
            4,
            3,
            |_, &x| {
                // Later items finish first, to shuffle completion order.
                std::thread::sleep(std::time::Duration::from_micros(50 * (50 - x)));
                running.fetch_add(1, Ordering::SeqCst);
                Ok(x * 2)
            },
            |i, v| {
                // Never more than `window` produced ahead of the consumer.
                assert!(running.load(Ordering::SeqCst) <= i + 1 + 3);
                seen.push(v);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(map(&items, 3, |_, &x| Ok(x + 1)).unwrap()[49], 50);
    }

    #[test]
    fn the_first_failure_in_order_stops_the_work() {
        let items: Vec<usize> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let err = map(&items, 2, |_, &x| {
            started.fetch_add(1, Ordering::SeqCst);
            if x == 5 || x == 7 {
                anyhow::bail!("item {x} failed")
            }
            Ok(x)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 5 failed");
        assert!(started.load(Ordering::SeqCst) < 100);
        // A consumer failure stops the producers too.
        let started = AtomicUsize::new(0);
        let err = ordered(
            &items,
            2,
            4,
            |_, &x| {
                started.fetch_add(1, Ordering::SeqCst);
                Ok(x)
            },
            |i, _| {
                if i == 3 {
                    anyhow::bail!("consumer stopped")
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "consumer stopped");
        assert!(started.load(Ordering::SeqCst) <= 10);
    }
}
