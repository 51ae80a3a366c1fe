//! A warmed-up plan executor allocates nothing per step: a call's heap
//! allocations are bounded by a small constant (the input-binding map and the
//! returned output tensors), not by the number of steps, on fixtures whose
//! every node runs a fast kernel — on one thread and on two.

use d2nn_runtime::npy::read_npy;
use d2nnc::plan::{Executor, Kernel, Step};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts every allocation and reallocation in the process.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warmed_up_calls_do_not_allocate_per_step() {
    for name in ["resnet_tiny", "mobilenetv2_tiny"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
        let model = d2nnc::load_and_optimize(&dir.join("model.onnx")).unwrap();
        let program = d2nnc::plan::lower(&model.graph).unwrap();
        let steps = program.body.len();
        assert!(
            program.body.iter().all(|s| matches!(s, Step::Node { kernel, .. } if !matches!(kernel, Kernel::Reference))),
            "{name}: every step should run a fast kernel"
        );
        let outputs = program.outputs.len();
        let input = read_npy(&dir.join("input_0.npy")).unwrap();
        let feeds = HashMap::from([(model.graph.values[model.graph.inputs[0]].name.clone(), input)]);
        let program = Arc::new(program);
        for threads in [1, 2] {
            let mut executor = Executor::with_threads(Arc::clone(&program), threads);
            for _ in 0..3 {
                executor.run(&feeds).unwrap();
            }
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            let result = executor.run(&feeds).unwrap();
            let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
            drop(result);
            // The binding map and call state, plus each output's buffer and shape.
            let bound = 8 + 3 * outputs;
            eprintln!("{name}, {threads} thread(s): {during} allocations per call of {steps} steps");
            assert!(during <= bound, "{name}, {threads} thread(s): {during} allocations in one call of {steps} steps (bound {bound})");
        }
    }
}
