//! A readable listing of a [`Program`]: every step with its node, kernel
//! (what was fused into it, and whether it writes in place), operands and
//! results, and the arena's size. `d2nnc inspect --plan` prints it; golden
//! tests pin it.

use super::{Buffer, BufferId, Fused, Kernel, Program, Step, Storage};
use crate::ir::types::TypeDisplay;
use crate::ir::TensorType;
use d2nn_runtime::gemm::Activation;
use std::fmt::Write;

/// The listing of `program`.
pub fn print(program: &Program) -> String {
    let mut out = String::new();
    let arena = &program.arena;
    let _ = writeln!(
        out,
        "program `{}`: {} steps, {} arena buffers, arena {} bytes per sample + {} fixed",
        program.graph.name,
        count_steps(&program.body),
        arena.placements.len(),
        arena.bytes_per_batch,
        arena.fixed_bytes
    );
    for &b in &program.inputs {
        let _ = writeln!(out, "input  {}", buffer(program, b));
    }
    block(program, &program.body, 0, &mut out);
    for &b in &program.outputs {
        let _ = writeln!(out, "output {}", buffer(program, b));
    }
    out
}

fn count_steps(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match s {
            Step::Node { .. } => 1,
            Step::If { then_block, else_block, .. } => 1 + count_steps(then_block) + count_steps(else_block),
            Step::Block { body, .. } => 1 + count_steps(body),
            Step::Mask { .. } => 1,
        })
        .sum()
}

fn block(p: &Program, steps: &[Step], depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for step in steps {
        match step {
            Step::Node { node, kernel, inputs, outputs } => {
                let n = &p.graph.nodes[*node];
                let ins: Vec<String> = inputs.iter().flatten().map(|&b| short(p, b)).collect();
                let outs: Vec<String> = outputs.iter().map(|&b| buffer(p, b)).collect();
                let in_place = matches!(inputs.first(), Some(Some(i)) if same_slot(p, *i, outputs[0]));
                let _ = writeln!(
                    out,
                    "{pad}{} [{}] {}{}: ({}) -> {}",
                    n.name,
                    n.op.name(),
                    describe(kernel),
                    if in_place { ", in place" } else { "" },
                    ins.join(", "),
                    outs.join(", ")
                );
            }
            Step::If { node, cond, then_block, else_block, then_yields, else_yields, outputs } => {
                let _ = writeln!(out, "{pad}{} [If] on {}", p.graph.nodes[*node].name, short(p, *cond));
                let _ = writeln!(out, "{pad}  then:");
                block(p, then_block, depth + 2, out);
                let _ = writeln!(out, "{pad}    yield {}", names(p, then_yields));
                let _ = writeln!(out, "{pad}  else:");
                block(p, else_block, depth + 2, out);
                let _ = writeln!(out, "{pad}    yield {}", names(p, else_yields));
                let _ = writeln!(out, "{pad}  -> {}", outputs.iter().map(|&b| buffer(p, b)).collect::<Vec<_>>().join(", "));
            }
            Step::Block { block: b, atoms: _, gathers, outputs, body } => {
                let guard = p.dynamic.as_ref().map_or_else(String::new, |a| {
                    let block = &a.blocks[*b];
                    let mode = match &block.mode {
                        crate::dynamic::Mode::Routed => "routed",
                        crate::dynamic::Mode::WholeBatch { .. } => "whole batch",
                        crate::dynamic::Mode::Batch => "batch-wide",
                    };
                    format!("if {} ({mode})", a.guard_text(&block.local))
                });
                let _ = writeln!(out, "{pad}R{b} {guard}:");
                for (full, twin) in gathers {
                    let _ = writeln!(out, "{pad}  gather rows {} -> {}", short(p, *full), buffer(p, *twin));
                }
                block(p, body, depth + 1, out);
                if !outputs.is_empty() {
                    let _ = writeln!(out, "{pad}  scatter {}", names(p, outputs));
                }
            }
            Step::Mask { node, gate, output } => {
                let _ = writeln!(out, "{pad}{} [Mask] rows of {} where {} is 0 -> 0", p.graph.nodes[*node].name, short(p, *output), short(p, *gate));
            }
        }
    }
}

fn names(p: &Program, bs: &[BufferId]) -> String {
    bs.iter().map(|&b| short(p, b)).collect::<Vec<_>>().join(", ")
}

fn same_slot(p: &Program, a: BufferId, b: BufferId) -> bool {
    matches!((&p.buffers[a].storage, &p.buffers[b].storage), (Storage::Arena(x), Storage::Arena(y)) if x == y)
}

/// `name`, or `const name` for constants.
fn short(p: &Program, b: BufferId) -> String {
    let buf = &p.buffers[b];
    match buf.storage {
        Storage::Const(_) => format!("const {}", buf.name),
        _ => buf.name.clone(),
    }
}

/// `name: type @ where`.
fn buffer(p: &Program, b: BufferId) -> String {
    let buf: &Buffer = &p.buffers[b];
    let ty = TypeDisplay { ty: &TensorType::new(buf.dtype, buf.shape.clone()), symbols: &p.graph.symbols }.to_string();
    let place = match &buf.storage {
        Storage::Input(i) => format!("input {i}"),
        Storage::Const(_) => "const".to_string(),
        Storage::Knob(k) => format!("knob {k}"),
        Storage::Arena(s) => format!("slot {s}"),
    };
    format!("{}: {ty} @ {place}", buf.name)
}

/// The kernel in a few words.
pub fn describe(kernel: &Kernel) -> String {
    match kernel {
        Kernel::Reference => "reference".into(),
        Kernel::Copy => "copy".into(),
        Kernel::Unary(op) => format!("unary {op:?}"),
        Kernel::Binary(b) => format!("binary {:?}", b.op),
        Kernel::Pool(p) => format!("pool {:?} {}x{}/{}", p.kind, p.h.kernel, p.w.kernel, p.h.stride),
        Kernel::GlobalPool { kind, .. } => format!("global pool {kind:?}"),
        Kernel::Softmax { log, .. } => if *log { "log-softmax" } else { "softmax" }.into(),
        Kernel::Reduce { kind, .. } => format!("reduce {kind:?}"),
        Kernel::BatchNorm { .. } => "batch norm".into(),
        Kernel::Conv(c) => {
            let g = &c.geometry;
            let how = if g.is_pointwise() { "pointwise" } else { "im2col" };
            format!(
                "conv {}x{}/{} group {} {}->{} {how} gemm{}{}",
                g.kh,
                g.kw,
                g.stride.0,
                g.group,
                g.c_in,
                g.c_out,
                if c.bias.is_some() { " + bias" } else { "" },
                fused(&c.fused)
            )
        }
        Kernel::Depthwise { geometry: d, bias, fused: f, .. } => format!(
            "depthwise {}x{}/{} x{}{}{}",
            d.kh,
            d.kw,
            d.stride.0,
            d.multiplier,
            if bias.is_some() { " + bias" } else { "" },
            fused(f)
        ),
        Kernel::Dense(d) => format!("dense {}->{}{}{}", d.k, d.n, if d.bias.is_some() { " + bias" } else { "" }, fused(&d.fused)),
        Kernel::Transpose(_) => "transpose".into(),
        Kernel::Slice(_) => "slice".into(),
        Kernel::Concat { .. } => "concat".into(),
        Kernel::Split { .. } => "split".into(),
        Kernel::Gather(_) => "gather".into(),
        Kernel::Pad { .. } => "pad".into(),
        Kernel::ReduceOverBatch { kind, .. } => format!("reduce {kind:?} over the batch"),
        Kernel::Compare(c) => format!("compare {:?}", c.op),
        Kernel::Where(_) => "where".into(),
        Kernel::Logic(l) => format!("logic {:?}", l.op),
        Kernel::Not => "not".into(),
        Kernel::Cast { from, to } => format!("cast {from} -> {to}"),
        Kernel::ArgReduce(a) => format!("{}{}", if a.max { "argmax" } else { "argmin" }, if a.select_last_index { " (last index)" } else { "" }),
        Kernel::OneHot { geometry, .. } => format!("one-hot depth {}", geometry.depth),
        Kernel::LayerNorm { geometry, bias, .. } => format!("layer norm over {}{}", geometry.row, if bias.is_some() { " + bias" } else { "" }),
        Kernel::ConvTranspose(c) => {
            let g = &c.geometry;
            format!(
                "conv transpose {}x{}/{} group {} {}->{} gemm + col2im{}",
                g.kh,
                g.kw,
                g.stride.0,
                g.group,
                g.c_in,
                g.c_out,
                if c.bias.is_some() { " + bias" } else { "" }
            )
        }
    }
}

/// ` + residual + relu` and the like.
fn fused(f: &Fused) -> String {
    let mut s = String::new();
    if f.residual {
        s.push_str(" + residual");
    }
    match f.activation {
        Activation::Identity => {}
        Activation::Relu => s.push_str(" + relu"),
        Activation::Clip { min, max } => {
            let _ = write!(s, " + clip({min}, {max})");
        }
        Activation::LeakyRelu { alpha } => {
            let _ = write!(s, " + leaky relu({alpha})");
        }
        Activation::Sigmoid => s.push_str(" + sigmoid"),
    }
    s
}
