//! `registry::resolve`: the per-request lookup, against a `RwLock<HashMap>` baseline.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use cortex_core::{Endpoint, EngineKind, InMemoryRegistry, InstanceId, ModelId, Registry};
use criterion::{Criterion, criterion_group, criterion_main};

const MODELS: usize = 32;

fn endpoint(model: usize, replica: u32) -> Endpoint {
    Endpoint::new(
        ModelId::new(format!("model-{model}")).unwrap(),
        format!("served-{model}"),
        replica,
        InstanceId::new(format!("i-{model}-{replica}")),
        EngineKind::LLAMA_CPP,
        format!("http://127.0.0.1:{}", 20000 + model)
            .parse()
            .unwrap(),
    )
}

/// The obvious alternative: a read-write lock around a map.
#[derive(Default)]
struct LockedRegistry(RwLock<HashMap<Arc<str>, Arc<[Endpoint]>>>);

impl LockedRegistry {
    fn resolve(&self, name: &str) -> Option<Arc<[Endpoint]>> {
        self.0.read().unwrap().get(name).cloned()
    }

    fn register(&self, e: Endpoint) {
        let mut map = self.0.write().unwrap();
        let key = e.served_name.clone();
        let mut list = map.get(&key).map(|l| l.to_vec()).unwrap_or_default();
        list.retain(|x| x.instance != e.instance);
        list.push(e);
        map.insert(key, list.into());
    }
}

fn filled() -> (InMemoryRegistry, LockedRegistry) {
    let fast = InMemoryRegistry::new();
    let locked = LockedRegistry::default();
    for m in 0..MODELS {
        for r in 0..2 {
            fast.register(endpoint(m, r));
            locked.register(endpoint(m, r));
        }
    }
    (fast, locked)
}

/// Resolves every name in turn through both registries, as one criterion group.
fn compare(
    c: &mut Criterion,
    group: &str,
    fast: &InMemoryRegistry,
    locked: &LockedRegistry,
    names: &[String],
) {
    let mut group = c.benchmark_group(group);
    group.bench_function("arc_swap", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % MODELS;
            black_box(fast.resolve(black_box(&names[i])))
        });
    });
    group.bench_function("rwlock_baseline", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % MODELS;
            black_box(locked.resolve(black_box(&names[i])))
        });
    });
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let (fast, locked) = filled();
    let names: Vec<String> = (0..MODELS).map(|m| format!("served-{m}")).collect();
    compare(c, "registry::resolve", &fast, &locked, &names);
}

/// The same lookups while another thread re-registers endpoints as fast as it can.
fn resolve_under_writes(c: &mut Criterion) {
    let (fast, locked) = filled();
    let (fast, locked) = (Arc::new(fast), Arc::new(locked));
    let names: Vec<String> = (0..MODELS).map(|m| format!("served-{m}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fast, locked, stop) = (fast.clone(), locked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let m = (n as usize) % MODELS;
                fast.deregister(&format!("served-{m}"), &InstanceId::new(format!("i-{m}-1")));
                fast.register(endpoint(m, 1));
                locked.register(endpoint(m, 1));
                n = n.wrapping_add(1);
            }
        })
    };
    compare(c, "registry::resolve_under_writes", &fast, &locked, &names);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

criterion_group!(benches, resolve, resolve_under_writes);
criterion_main!(benches);
