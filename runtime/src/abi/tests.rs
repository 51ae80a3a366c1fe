//! The ABI end to end without a code generator: a hand-written `run`
//! function (what Cranelift emits, in Rust) calls the hooks on a small
//! model, through [`Model`] and through the C API — bad pointers, sizes,
//! knobs and overlapping operands included. Run under Miri by `tests/miri.sh`.

use super::capi::*;
use super::meta::{Knob, KernelDesc, KernelEntry, ModelMeta, Port};
use super::{frame_layout, hooks, Compiled, Frame, Model, ModelError, Operand, Status, ABI_VERSION};
use crate::compiled::Dim;
use crate::kernels::elementwise::Unary;
use crate::trace::{RegionCost, TraceSpec};
use crate::weights::WeightsWriter;
use crate::DType;
use std::ffi::CStr;

const ROW: usize = 4;

fn meta() -> ModelMeta {
    let port = |name: &str| Port { name: name.into(), dtype: DType::F32, dims: vec![Dim::Batch(1), Dim::Known(ROW)] };
    ModelMeta {
        name: "relu".into(),
        inputs: vec![port("x")],
        outputs: vec![port("y")],
        knobs: vec![Knob { name: "t".into(), default: 0.5, elements: 1, used_by: "none".into() }],
        trace: TraceSpec { root: RegionCost { flops_per_sample: 4, flops_fixed: 0 }, regions: vec![], paths: None },
        dense: RegionCost { flops_per_sample: 4, flops_fixed: 0 },
        region_text: vec![],
        path_text: vec![],
        arena_bytes_per_batch: 0,
        arena_fixed_bytes: 0,
        blocks: 0,
        samples: Dim::Batch(1),
        consts: vec![],
        kernels: vec![KernelEntry { node: "relu".into(), op: "Relu".into(), kernel: KernelDesc::Unary(Unary::Relu) }],
    }
}

/// What the code generator emits for `y = relu(x)`: one kernel call.
unsafe extern "C" fn relu_run(frame: *const Frame) -> i32 {
    // SAFETY: `frame` is the frame `Model::run` built; its input and output
    // tables hold one pointer each, sized for `batch` rows.
    unsafe {
        let batch = *((frame as *const u8).add(frame_layout::BATCH as usize) as *const usize);
        let x = *(*frame).inputs;
        let y = *(*frame).outputs;
        let bytes = batch * ROW * 4;
        let ops = [Operand { ptr: x as *mut u8, bytes, dtype: 0, reserved: 0 }, Operand { ptr: y, bytes, dtype: 0, reserved: 0 }];
        hooks::d2nn_rt_kernel(frame, 0, batch, ops.as_ptr(), 2)
    }
}

/// Like `relu_run`, but passes the input as the output too (an overlap the hook must refuse).
unsafe extern "C" fn overlapping_run(frame: *const Frame) -> i32 {
    // SAFETY: as in `relu_run`.
    unsafe {
        let x = *(*frame).inputs as *mut u8;
        let ops = [Operand { ptr: x, bytes: 8, dtype: 0, reserved: 0 }, Operand { ptr: x.add(4), bytes: 8, dtype: 0, reserved: 0 }];
        hooks::d2nn_rt_kernel(frame, 0, 1, ops.as_ptr(), 2)
    }
}

/// A compiled record over owned metadata and weights.
struct Record {
    compiled: Compiled,
    _meta: Vec<u8>,
    _weights: Vec<u8>,
}

fn record(meta: &ModelMeta, run: super::RunFn, version: u32) -> Box<Record> {
    let meta = meta.encode();
    let weights = WeightsWriter::new().finish();
    let compiled = Compiled { abi_version: version, reserved: 0, meta: meta.as_ptr(), meta_len: meta.len(), weights: weights.as_ptr(), weights_len: weights.len(), run: Some(run) };
    Box::new(Record { compiled, _meta: meta, _weights: weights })
}

fn bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

#[test]
fn model_runs_code_through_the_hooks() {
    let r = record(&meta(), relu_run, ABI_VERSION);
    // SAFETY: a record whose pointers own their bytes for the test.
    let mut m = unsafe { Model::from_compiled(&r.compiled, 1) }.unwrap();
    let x = [-1.0f32, 2.0, -0.0, f32::NAN, 3.0, -4.0, 5.0, -6.0];
    let mut y = [9.0f32; 8];
    let batch = m.run(&[bytes(&x)], &mut [bytemuck::cast_slice_mut(&mut y)]).unwrap();
    assert_eq!(batch, 2);
    assert_eq!(&y[..3], &[0.0, 2.0, -0.0]);
    assert!(y[3].is_nan());
    assert_eq!(m.trace().flops_executed, 8);
    // Wrong sizes name the port; the output is untouched.
    let mut short = [0.0f32; 4];
    let e = m.run(&[bytes(&x)], &mut [bytemuck::cast_slice_mut(&mut short)]).unwrap_err();
    assert!(matches!(e, ModelError::Output { ref name, .. } if name == "y"), "{e}");
    let e = m.run(&[bytes(&x[..3])], &mut [bytemuck::cast_slice_mut(&mut y)]).unwrap_err();
    assert!(matches!(e, ModelError::Input { ref name, .. } if name == "x"), "{e}");
    assert!(m.set_knob("t", f32::NAN).is_err());
    assert!(m.set_knob("nope", 1.0).is_err());
    m.set_knob("t", 0.25).unwrap();
    assert_eq!(m.knob("t").unwrap(), 0.25);
}

#[test]
fn models_from_another_abi_or_with_overlapping_operands_are_refused() {
    let r = record(&meta(), relu_run, ABI_VERSION + 1);
    // SAFETY: as above.
    assert!(matches!(unsafe { Model::from_compiled(&r.compiled, 1) }, Err(ModelError::Meta(_))));
    let r = record(&meta(), overlapping_run, ABI_VERSION);
    // SAFETY: as above.
    let mut m = unsafe { Model::from_compiled(&r.compiled, 1) }.unwrap();
    let x = [1.0f32; 4];
    let mut y = [0.0f32; 4];
    let e = m.run(&[bytes(&x)], &mut [bytemuck::cast_slice_mut(&mut y)]).unwrap_err();
    assert!(matches!(e, ModelError::Node { ref node, .. } if node == "relu"), "{e}");
}

fn last_error() -> String {
    // SAFETY: `d2nn_last_error` returns a NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(d2nn_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn c_api_checks_every_pointer_and_size() {
    let r = record(&meta(), relu_run, ABI_VERSION);
    let ok = Status::Ok as i32;
    // SAFETY: every call below passes valid pointers or nulls, as the C API allows.
    unsafe {
        let mut model: *mut CModel = std::ptr::null_mut();
        assert_eq!(d2nn_model_create(std::ptr::null(), 1, &mut model), Status::NullPointer as i32);
        assert!(last_error().contains("compiled"));
        assert_eq!(d2nn_model_create(&r.compiled, 1, std::ptr::null_mut()), Status::NullPointer as i32);
        assert_eq!(d2nn_model_create(&r.compiled, 0, &mut model), ok);
        assert!(!model.is_null());

        let (mut executed, mut dense, mut path, mut rows) = (0u64, 0u64, 0usize, 0usize);
        assert_eq!(d2nn_model_flops(model, &mut executed, &mut dense), Status::OutOfRange as i32);
        let x = [-1.0f32, 1.0, -2.0, 2.0];
        let mut y = [0.0f32; 4];
        let inputs = [x.as_ptr()];
        let outputs = [y.as_mut_ptr()];
        let (lens, short) = ([4usize], [3usize]);
        let mut batch = 0usize;
        assert_eq!(d2nn_model_run(std::ptr::null_mut(), inputs.as_ptr(), lens.as_ptr(), 1, outputs.as_ptr(), lens.as_ptr(), 1, &mut batch), Status::NullPointer as i32);
        assert_eq!(d2nn_model_run(model, std::ptr::null(), lens.as_ptr(), 1, outputs.as_ptr(), lens.as_ptr(), 1, &mut batch), Status::NullPointer as i32);
        assert_eq!(d2nn_model_run(model, inputs.as_ptr(), short.as_ptr(), 1, outputs.as_ptr(), lens.as_ptr(), 1, &mut batch), Status::BadSize as i32);
        assert!(last_error().contains('x'), "{}", last_error());
        assert_eq!(d2nn_model_run(model, inputs.as_ptr(), lens.as_ptr(), 1, outputs.as_ptr(), short.as_ptr(), 1, &mut batch), Status::BadSize as i32);
        assert_eq!(d2nn_model_run(model, inputs.as_ptr(), lens.as_ptr(), 0, outputs.as_ptr(), lens.as_ptr(), 1, &mut batch), Status::BadSize as i32);
        let null_input = [std::ptr::null::<f32>()];
        assert_eq!(d2nn_model_run(model, null_input.as_ptr(), lens.as_ptr(), 1, outputs.as_ptr(), lens.as_ptr(), 1, &mut batch), Status::NullPointer as i32);
        assert_eq!(d2nn_model_run(model, inputs.as_ptr(), lens.as_ptr(), 1, outputs.as_ptr(), lens.as_ptr(), 1, &mut batch), ok);
        assert_eq!((batch, y), (1, [0.0, 1.0, 0.0, 2.0]));

        assert_eq!(d2nn_model_flops(model, &mut executed, &mut dense), ok);
        assert_eq!((executed, dense), (4, 4));
        assert_eq!(d2nn_model_flops(model, std::ptr::null_mut(), &mut dense), Status::NullPointer as i32);
        assert_eq!(d2nn_model_sample_path(model, 0, &mut path), Status::OutOfRange as i32, "a dense model lists no paths");
        assert_eq!(d2nn_model_sample_path(model, 7, &mut path), Status::OutOfRange as i32);
        assert_eq!(d2nn_model_region_rows(model, 0, &mut rows), Status::OutOfRange as i32);

        let (name, bad) = (c"t", c"nope");
        let mut v = 0.0f32;
        assert_eq!(d2nn_model_set_knob(model, name.as_ptr(), f32::INFINITY), Status::BadKnob as i32);
        assert_eq!(d2nn_model_set_knob(model, bad.as_ptr(), 1.0), Status::BadKnob as i32);
        assert!(last_error().contains("nope"));
        assert_eq!(d2nn_model_set_knob(model, std::ptr::null(), 1.0), Status::NullPointer as i32);
        assert_eq!(d2nn_model_set_knob(model, name.as_ptr(), 0.75), ok);
        assert_eq!(d2nn_model_get_knob(model, name.as_ptr(), &mut v), ok);
        assert_eq!(v, 0.75);
        assert_eq!(d2nn_model_get_knob(model, name.as_ptr(), std::ptr::null_mut()), Status::NullPointer as i32);
        d2nn_model_free(model);
        d2nn_model_free(std::ptr::null_mut());
    }
}
