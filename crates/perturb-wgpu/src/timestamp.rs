//! GPU-side timing with timestamp queries, for `perturb bench`.
//!
//! [`WgpuBackend::time_gpu`] brackets each call of a closure with two timestamps on the
//! backend's queue and returns end - start in milliseconds (ticks x
//! `Queue::get_timestamp_period`). Only `Features::TIMESTAMP_QUERY` is needed: each timestamp
//! is written by an empty compute pass (its `timestamp_writes`) in a command buffer of its
//! own, submitted on the same queue, so it needs neither `TIMESTAMP_QUERY_INSIDE_ENCODERS` nor
//! `_INSIDE_PASSES` nor any hook in the dispatch batch. On Vulkan a pass timestamp is written
//! at BOTTOM_OF_PIPE, i.e. after all earlier commands of the queue have finished, so the span
//! covers exactly the work submitted between the two stamps.
//!
//! The start stamp is recorded before the closure runs but submitted after it, right before
//! the batch the closure recorded (the backend defers dispatches until the host needs data),
//! so the time the host spends recording is not counted as GPU time. A closure that submits
//! work itself (a read-back, a full batch) cannot be bracketed that way: from the first such
//! repetition on the start stamp is submitted before the closure, and its span then includes
//! the host round trips in between; [`GpuTimes::host_gaps`] counts those repetitions.

use crate::WgpuBackend;
use crate::launch::scoped;
use perturb_core::{Error, Result};

const BACKEND: &str = "wgpu";
/// Repetitions whose timestamps share one query set (two queries each, within wgpu's
/// QUERY_SET_MAX_QUERIES of 4096).
const CHUNK: usize = 1024;

/// What [`WgpuBackend::time_gpu`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuTimes {
    /// GPU time of each repetition (end stamp - start stamp), milliseconds.
    pub ms: Vec<f64>,
    /// Repetitions in which the closure submitted work itself: their span also holds the
    /// host time between those submissions (0 for a plain kernel launch).
    pub host_gaps: usize,
}

fn stamp_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device { backend: BACKEND, msg: format!("timestamp queries: {what}: {e}") }
}

/// One chunk's query set and the buffers its results are resolved into and read from.
struct Stamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    count: u32,
}

impl WgpuBackend {
    /// Whether this device can time work with timestamp queries (the adapter offers
    /// `TIMESTAMP_QUERY`, it was requested, and the queue reports a tick period).
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY) && self.queue.get_timestamp_period() > 0.0
    }

    /// Runs `f` `reps` times and returns the GPU time of each call, from timestamp queries
    /// written before and after it on the queue. Waits for all earlier work first. Err when
    /// the device has no timestamp queries (see [`has_timestamps`](Self::has_timestamps)),
    /// when `f` fails, or when the device reports an error. Other threads must not submit to
    /// this backend meanwhile (their work would be counted).
    pub fn time_gpu<E: From<Error>>(
        &self,
        reps: usize,
        f: &mut dyn FnMut() -> std::result::Result<(), E>,
    ) -> std::result::Result<GpuTimes, E> {
        if !self.has_timestamps() {
            return Err(Error::Unsupported {
                backend: BACKEND,
                what: format!("timestamp queries on {} (no TIMESTAMP_QUERY)", self.adapter().name),
            }
            .into());
        }
        let period_ns = f64::from(self.queue.get_timestamp_period());
        self.wait()?;
        let mut out = GpuTimes { ms: Vec::with_capacity(reps), host_gaps: 0 };
        let mut eager = false;
        let mut done = 0;
        while done < reps {
            let n = (reps - done).min(CHUNK);
            let stamps = self.stamps(n)?;
            for i in 0..n as u32 {
                let gap = self.time_one(&stamps.set, 2 * i, &mut eager, f)?;
                out.host_gaps += usize::from(gap);
            }
            for (start, end) in self.read_stamps(&stamps)? {
                if end < start || start == 0 {
                    return Err(stamp_err(
                        "unusable timestamps",
                        format!("start {start}, end {end} ticks on {}", self.adapter().name),
                    )
                    .into());
                }
                out.ms.push((end - start) as f64 * period_ns * 1e-6);
            }
            done += n;
        }
        Ok(out)
    }

    /// A query set for `n` repetitions and its resolve and read-back buffers.
    fn stamps(&self, n: usize) -> Result<Stamps> {
        let count = 2 * n as u32;
        let bytes = 8 * u64::from(count);
        let (s, err) = scoped(&self.device, || Stamps {
            set: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("perturb bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("perturb timestamp resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("perturb timestamp read-back"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            count,
        });
        match err {
            Some(e) => Err(stamp_err("creating the query set", e)),
            None => Ok(s),
        }
    }

    /// A command buffer holding one empty compute pass that writes timestamp `index`.
    fn stamp(&self, set: &wgpu::QuerySet, index: u32) -> wgpu::CommandBuffer {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timestamp") });
        drop(enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("timestamp"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(index),
                end_of_pass_write_index: None,
            }),
        }));
        enc.finish()
    }

    fn submit_stamp(&self, set: &wgpu::QuerySet, index: u32) -> Result<()> {
        self.submit(self.stamp(set, index))
    }

    fn submit(&self, cb: wgpu::CommandBuffer) -> Result<()> {
        let (_, err) = scoped(&self.device, || self.queue.submit([cb]));
        match err {
            Some(e) => Err(stamp_err("submitting a timestamp", e)),
            None => Ok(()),
        }
    }

    /// One repetition: stamps `index` (start) and `index + 1` (end) around `f`. Returns
    /// whether the span includes host round trips (`f` submitted work itself).
    fn time_one<E: From<Error>>(
        &self,
        set: &wgpu::QuerySet,
        index: u32,
        eager: &mut bool,
        f: &mut dyn FnMut() -> std::result::Result<(), E>,
    ) -> std::result::Result<bool, E> {
        if !*eager {
            let start = self.stamp(set, index);
            let before = self.submissions();
            f()?;
            if self.submissions() == before {
                // Nothing of f has reached the queue yet: the start stamp goes right in front.
                self.submit(start)?;
                self.flush()?;
                self.submit_stamp(set, index + 1)?;
                return Ok(false);
            }
            // f submitted part of its work before the start stamp could: run it again with
            // the stamp first, and keep doing so.
            *eager = true;
        }
        self.submit_stamp(set, index)?;
        f()?;
        self.flush()?;
        self.submit_stamp(set, index + 1)?;
        Ok(true)
    }

    /// Resolves the chunk's queries and reads them back as (start, end) tick pairs.
    fn read_stamps(&self, s: &Stamps) -> Result<Vec<(u64, u64)>> {
        let bytes = 8 * u64::from(s.count);
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("resolve") });
        enc.resolve_query_set(&s.set, 0..s.count, &s.resolve, 0);
        enc.copy_buffer_to_buffer(&s.resolve, 0, &s.readback, 0, bytes);
        self.submit(enc.finish())?;
        let (tx, rx) = std::sync::mpsc::channel();
        s.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| stamp_err("waiting for the device", e))?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stamp_err("mapping the read-back buffer", e)),
            Err(_) => return Err(stamp_err("reading back", "the map did not complete")),
        }
        let ticks: Vec<u64> = {
            let view = s.readback.get_mapped_range(..).map_err(|e| stamp_err("reading the mapped buffer", e))?;
            view.chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    u64::from_le_bytes(a)
                })
                .collect()
        };
        s.readback.unmap();
        Ok(ticks.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::WgpuBackend;
    use perturb_core::ops::{Conv2dParams, EltParams};
    use perturb_core::{Backend, Error, Shape};
    use std::time::Instant;

    /// On an adapter with timestamp queries (lavapipe has them): a conv with 64x the work of
    /// another takes longer by GPU time, every time is positive and finite, and GPU times are
    /// never longer than the wall time around the same calls. Without the feature, `time_gpu`
    /// is an error that says so.
    #[test]
    fn heavier_work_takes_longer_gpu_time() {
        let Some(b) = crate::test_backend() else { return };
        let run = |b: &WgpuBackend| -> Result<(), Error> {
            if !b.has_timestamps() {
                let e = b.time_gpu(3, &mut || Ok::<(), Error>(())).expect_err("no timestamps: Err");
                assert!(e.to_string().contains("TIMESTAMP_QUERY"), "{e}");
                println!("skipped: {} has no timestamp queries", b.adapter().name);
                return Ok(());
            }
            let conv = |c: usize| -> Result<_, Error> {
                let p = Conv2dParams::new([2, c, 24, 24], [c, c, 3, 3], 1, 1)?;
                let x = b.upload_f32(&vec![0.5; 2 * c * 24 * 24], &Shape::from([2, c, 24, 24]))?;
                let w = b.upload_f32(&vec![0.25; c * c * 9], &Shape::from([c, c, 3, 3]))?;
                Ok((p, x, w))
            };
            let (lp, lx, lw) = conv(4)?;
            let (hp, hx, hw) = conv(32)?;
            // Warm-up: pipelines are built on first use.
            b.conv2d_fwd(&lx, &lw, &lp)?;
            b.conv2d_fwd(&hx, &hw, &hp)?;
            let wall = Instant::now();
            let light = b.time_gpu(5, &mut || b.conv2d_fwd(&lx, &lw, &lp).map(drop))?;
            let light_wall = wall.elapsed().as_secs_f64() * 1e3;
            let heavy = b.time_gpu(5, &mut || b.conv2d_fwd(&hx, &hw, &hp).map(drop))?;
            for t in [&light, &heavy] {
                assert_eq!(t.ms.len(), 5);
                assert_eq!(t.host_gaps, 0, "a kernel launch is bracketed without host gaps");
                assert!(t.ms.iter().all(|&m| m.is_finite() && m > 0.0), "{t:?}");
            }
            let med = |v: &[f64]| {
                let mut v = v.to_vec();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (lm, hm) = (med(&light.ms), med(&heavy.ms));
            println!("{}: conv 4->4 ch {lm:.4} ms, 32->32 ch {hm:.4} ms (GPU time, median of 5)", b.adapter().name);
            assert!(hm > 4.0 * lm, "64x the FLOPs: heavy {hm} ms vs light {lm} ms");
            let light_sum: f64 = light.ms.iter().sum();
            assert!(light_sum <= light_wall, "GPU time {light_sum} ms > wall time {light_wall} ms");

            // A closure that reads back (a host round trip) is still timed, and counted.
            let y = b.zeros(&Shape::from([1 << 12]), perturb_core::DType::F32)?;
            let p = EltParams::new(1 << 12, 1.0, 1.0)?;
            let rt = b.time_gpu(3, &mut || {
                let z = b.axpby(&y, &y, &p)?;
                b.download_f32(&z).map(drop)
            })?;
            assert_eq!(rt.ms.len(), 3);
            assert_eq!(rt.host_gaps, 3, "{rt:?}");
            assert!(rt.ms.iter().all(|&m| m.is_finite() && m > 0.0), "{rt:?}");
            Ok(())
        };
        run(&b).unwrap_or_else(|e| panic!("{e}"));
    }

    /// An error inside the timed closure comes back as that error, and the backend keeps
    /// working.
    #[test]
    fn a_failing_closure_is_its_error() {
        let Some(b) = crate::test_backend() else { return };
        if !b.has_timestamps() {
            println!("skipped: {} has no timestamp queries", b.adapter().name);
            return;
        }
        let e = b.time_gpu(2, &mut || Err(Error::invalid("probe", "on purpose"))).expect_err("the closure's error");
        assert!(e.to_string().contains("on purpose"), "{e}");
        let t = b.time_gpu(2, &mut || Ok::<(), Error>(())).expect("an empty closure is timed");
        assert!(t.ms.iter().all(|&m| m.is_finite() && m >= 0.0), "{t:?}");
    }
}
