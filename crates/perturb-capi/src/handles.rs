//! The handle table. A handle given to C is a token, never the address of a Rust object: every
//! call looks it up in this table under a lock and clones the object's `Arc`, so a handle
//! destroyed (on any thread) while a call runs keeps its object alive to the call's end, and a
//! destroyed or made-up handle is an error (`PERTURB_STATUS_INVALID_HANDLE`), never a read of
//! freed memory. Tokens are never reused within a process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::{Engine, ModelOps, TrainerOps};
use crate::error::{Error, Result, Status};

/// An open backend (cpu, wgpu or cuda). Opaque; made by `perturb_backend_open`, freed by
/// `perturb_backend_destroy`.
pub struct PerturbBackend {
    _opaque: [u8; 0],
}

/// A model on a backend. Opaque; made by `perturb_model_load` or `perturb_model_build`, freed
/// by `perturb_model_destroy`. It keeps its backend open until it is destroyed.
pub struct PerturbModel {
    _opaque: [u8; 0],
}

/// A training state (optimiser, step count) bound to one model. Opaque; made by
/// `perturb_trainer_create`, freed by `perturb_trainer_destroy`.
pub struct PerturbTrainer {
    _opaque: [u8; 0],
}

enum Entry {
    Backend(Arc<dyn Engine>),
    Model(Arc<dyn ModelOps>),
    Trainer(Arc<dyn TrainerOps>),
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Backend(_) => "PerturbBackend",
            Entry::Model(_) => "PerturbModel",
            Entry::Trainer(_) => "PerturbTrainer",
        }
    }
}

static LIVE: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());
/// The next token / 16 (tokens look like aligned addresses and are never 0).
static NEXT: AtomicUsize = AtomicUsize::new(1);

fn table() -> std::sync::MutexGuard<'static, BTreeMap<usize, Entry>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn insert(e: Entry) -> usize {
    let token = NEXT.fetch_add(1, Ordering::Relaxed) << 4;
    table().insert(token, e);
    token
}

fn get<T>(token: usize, want: &'static str, pick: impl FnOnce(&Entry) -> Option<T>) -> Result<T> {
    if token == 0 {
        return Err(Error::null(want));
    }
    let live = table();
    match live.get(&token) {
        Some(e) => pick(e).ok_or_else(|| {
            Error::new(Status::InvalidHandle, format!("the handle passed as a {want} is a {}", e.kind()))
        }),
        None => Err(Error::new(
            Status::InvalidHandle,
            format!("{want} {token:#x} is not a live handle (destroyed, or never returned by perturb)"),
        )),
    }
}

/// Registers a backend; its handle.
pub fn new_backend(e: Arc<dyn Engine>) -> *mut PerturbBackend {
    std::ptr::without_provenance_mut(insert(Entry::Backend(e)))
}
/// Registers a model; its handle.
pub fn new_model(m: Arc<dyn ModelOps>) -> *mut PerturbModel {
    std::ptr::without_provenance_mut(insert(Entry::Model(m)))
}
/// Registers a trainer; its handle.
pub fn new_trainer(t: Arc<dyn TrainerOps>) -> *mut PerturbTrainer {
    std::ptr::without_provenance_mut(insert(Entry::Trainer(t)))
}

/// The backend behind a handle.
pub fn backend(h: *const PerturbBackend) -> Result<Arc<dyn Engine>> {
    get(h.addr(), "PerturbBackend", |e| if let Entry::Backend(b) = e { Some(b.clone()) } else { None })
}
/// The model behind a handle.
pub fn model(h: *const PerturbModel) -> Result<Arc<dyn ModelOps>> {
    get(h.addr(), "PerturbModel", |e| if let Entry::Model(m) = e { Some(m.clone()) } else { None })
}
/// The trainer behind a handle.
pub fn trainer(h: *const PerturbTrainer) -> Result<Arc<dyn TrainerOps>> {
    get(h.addr(), "PerturbTrainer", |e| if let Entry::Trainer(t) = e { Some(t.clone()) } else { None })
}

/// Removes a handle of kind `want` from the table (its object is freed once no call uses it).
/// NULL is a no-op; a handle that is not live, or of another kind, is an error.
pub fn remove(token: usize, want: &'static str) -> Result<()> {
    if token == 0 {
        return Ok(());
    }
    let mut live = table();
    match live.get(&token).map(Entry::kind) {
        Some(k) if k == want => {
            let e = live.remove(&token);
            // Drop the object outside the lock: dropping a model may free device memory.
            drop(live);
            drop(e);
            Ok(())
        }
        Some(k) => Err(Error::new(Status::InvalidHandle, format!("the handle passed as a {want} is a {k}"))),
        None => Err(Error::new(
            Status::InvalidHandle,
            format!("{want} {token:#x} is not a live handle (destroyed already, or never returned by perturb)"),
        )),
    }
}

/// Live handles of every kind (for the tests).
pub fn live_count() -> usize {
    table().len()
}
