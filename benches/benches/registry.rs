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

    fn deregister(&self, name: &str, instance: &str) {
        let mut map = self.0.write().unwrap();
        if let Some(list) = map.get(name) {
            let list: Vec<Endpoint> = list
                .iter()
                .filter(|e| e.instance.as_str() != instance)
                .cloned()
                .collect();
            map.insert(name.into(), list.into());
        }
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

/// Resolves every name in turn, `b.iter`-style.
fn bench_resolve(
    b: &mut criterion::Bencher<'_>,
    resolve: &dyn Fn(&str) -> Option<Arc<[Endpoint]>>,
) {
    let names: Vec<String> = (0..MODELS).map(|m| format!("served-{m}")).collect();
    let mut i = 0;
    b.iter(|| {
        i = (i + 1) % MODELS;
        black_box(resolve(black_box(&names[i])))
    });
}

/// Runs `work` in a loop on another thread until the returned guard is dropped.
fn background(work: impl Fn(u32) + Send + 'static) -> impl Drop {
    struct Stop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            if let Some(t) = self.1.take() {
                t.join().unwrap();
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut n = 0u32;
        while !flag.load(Ordering::Relaxed) {
            work(n);
            n = n.wrapping_add(1);
        }
    });
    Stop(stop, Some(thread))
}

/// The registries alone.
fn resolve(c: &mut Criterion) {
    let (fast, locked) = filled();
    let mut group = c.benchmark_group("registry::resolve");
    group.bench_function("arc_swap", |b| {
        bench_resolve(b, &|n| fast.resolve(n));
    });
    group.bench_function("rwlock_baseline", |b| {
        bench_resolve(b, &|n| locked.resolve(n));
    });
    group.finish();
}

/// While another thread resolves too: the gateway's normal case, requests on every core.
fn resolve_with_reader(c: &mut Criterion) {
    let (fast, locked) = filled();
    let (fast, locked) = (Arc::new(fast), Arc::new(locked));
    let mut group = c.benchmark_group("registry::resolve_with_reader");
    {
        let other = fast.clone();
        let _reader = background(move |n| {
            black_box(other.resolve(&format!("served-{}", n as usize % MODELS)));
        });
        group.bench_function("arc_swap", |b| {
            bench_resolve(b, &|n| fast.resolve(n));
        });
    }
    {
        let other = locked.clone();
        let _reader = background(move |n| {
            black_box(other.resolve(&format!("served-{}", n as usize % MODELS)));
        });
        group.bench_function("rwlock_baseline", |b| {
            bench_resolve(b, &|n| locked.resolve(n));
        });
    }
    group.finish();
}

/// While another thread replaces one endpoint after another as fast as it can: a write storm far
/// beyond the few writes per model lifetime the supervisor makes, to bound the worst case.
fn resolve_under_writes(c: &mut Criterion) {
    let (fast, locked) = filled();
    let (fast, locked) = (Arc::new(fast), Arc::new(locked));
    let mut group = c.benchmark_group("registry::resolve_under_writes");
    {
        let writer = fast.clone();
        let _writer = background(move |n| {
            let m = n as usize % MODELS;
            writer.deregister(&format!("served-{m}"), &InstanceId::new(format!("i-{m}-1")));
            writer.register(endpoint(m, 1));
        });
        group.bench_function("arc_swap", |b| {
            bench_resolve(b, &|n| fast.resolve(n));
        });
    }
    {
        let writer = locked.clone();
        let _writer = background(move |n| {
            let m = n as usize % MODELS;
            writer.deregister(&format!("served-{m}"), &format!("i-{m}-1"));
            writer.register(endpoint(m, 1));
        });
        group.bench_function("rwlock_baseline", |b| {
            bench_resolve(b, &|n| locked.resolve(n));
        });
    }
    group.finish();
}

criterion_group!(benches, resolve, resolve_with_reader, resolve_under_writes);
criterion_main!(benches);
