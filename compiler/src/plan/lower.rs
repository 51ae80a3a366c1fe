//! Lowering: optimised IR → [`Program`], with liveness-based arena planning.
//!
//! Steps are numbered in execution order, counting the steps inside `If`
//! branches, so a value's lifetime is the span from the step that writes it
//! to the last step that reads it. Values read inside a branch stay alive
//! through it; a branch's yields are read by the `If` when it ends; graph
//! outputs live to the end. Chains found by [`super::fuse`] become one step
//! at the position of their last node; their intermediate values get no
//! buffer.

use super::memory::{self, BufferRequest};
use super::{Buffer, BufferId, Kernel, Program, Step, Storage, RESIDUAL_INPUT};
use crate::dynamic::{Analysis, BlockId, Item, Mode};
use crate::ir::types::TypeDisplay;
use crate::ir::{Dim, Graph, NodeId, Op, RegionId, Symbol, ValueDef, ValueId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Why a graph cannot be lowered; names the value or node at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("value `{value}` has type {ty}: the plan needs every dim known except one batch symbol")]
    DynamicShape { value: String, ty: String },
    #[error("the graph has several symbolic dims ({0}); the plan supports one batch symbol")]
    SeveralSymbols(String),
    #[error("value `{0}` is read before it is defined (the graph does not verify)")]
    Undefined(String),
    #[error("arena planning failed: {0}")]
    Memory(#[from] memory::PlanMemoryError),
}

struct Lowering<'g> {
    graph: &'g Graph,
    buffers: Vec<Buffer>,
    of_value: HashMap<ValueId, BufferId>,
    /// (first step, last step) of every arena buffer, by buffer id.
    life: HashMap<BufferId, (usize, usize)>,
    step: usize,
    /// Reads of every value (for fusion: an absorbed value has one reader;
    /// in place: an input read once dies at its reader).
    uses: HashMap<ValueId, usize>,
    /// Output buffer → the input buffer whose slot it overwrites.
    in_place: HashMap<BufferId, BufferId>,
    /// The dynamic schedule being lowered, if any.
    analysis: Option<&'g Analysis>,
    /// Routed blocks being lowered, outermost first: their compacted copies.
    frames: Vec<Frame>,
}

/// A routed block during lowering: the values it compacts and the
/// compacted buffer (its "twin") of each one read so far.
struct Frame {
    gathers: HashSet<ValueId>,
    twins: HashMap<ValueId, BufferId>,
    /// (full buffer, compacted twin) pairs, in creation order.
    copies: Vec<(BufferId, BufferId)>,
    /// The step at which the block starts (where the copies are made).
    start: usize,
}

/// Lowers `graph` (already optimised) into a dense program: every node runs.
pub fn lower(graph: &Graph) -> Result<Program, LowerError> {
    lower_with(graph, None)
}

/// Lowers `graph` following `analysis`'s schedule: guarded blocks become
/// [`Step::Block`]s, gated `Mul`s get their [`Step::Mask`], and knobs
/// become run-time parameters.
pub fn lower_dynamic(graph: &Graph, analysis: &Analysis) -> Result<Program, LowerError> {
    lower_with(graph, Some(analysis))
}

fn lower_with(graph: &Graph, analysis: Option<&Analysis>) -> Result<Program, LowerError> {
    let symbols = used_symbols(graph);
    if symbols.len() > 1 {
        let names: Vec<&str> = symbols.iter().map(|s| graph.symbols[s.0 as usize].as_str()).collect();
        return Err(LowerError::SeveralSymbols(names.join(", ")));
    }
    let mut l = Lowering {
        graph,
        buffers: Vec::new(),
        of_value: HashMap::new(),
        life: HashMap::new(),
        step: 0,
        uses: graph.use_counts(),
        in_place: HashMap::new(),
        analysis: analysis.filter(|a| a.is_dynamic()),
        frames: Vec::new(),
    };
    if let Some(a) = l.analysis {
        for (k, knob) in a.knobs.iter().enumerate() {
            l.new_buffer(knob.value, Storage::Knob(k))?;
        }
    }
    let inputs = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| l.new_buffer(v, super::Storage::Input(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let body = match l.analysis {
        Some(a) => {
            let fusion = l.fusion(graph.root);
            let mut fusion = fusion;
            l.items(&a.body, &mut fusion)?
        }
        None => l.block(graph.root)?,
    };
    let end = l.step;
    let outputs = graph.outputs().iter().map(|&v| l.read(v, end)).collect::<Result<Vec<_>, _>>()?;

    // Buffers written in place share their input's slot: fold their
    // lifetimes into that root's.
    let root = |mut b: BufferId| {
        while let Some(&to) = l.in_place.get(&b) {
            b = to;
        }
        b
    };
    for (&b, _) in l.in_place.iter() {
        let (first, last) = l.life[&b];
        let r = l.life.get_mut(&root(b)).expect("an in-place root lives in the arena");
        *r = (r.0.min(first), r.1.max(last));
    }
    // Plan the arena over the buffers that live in it, in slot order.
    let mut slots: Vec<BufferId> = l.life.keys().copied().filter(|b| !l.in_place.contains_key(b)).collect();
    slots.sort_unstable();
    let slot_of: HashMap<BufferId, usize> = slots.iter().enumerate().map(|(slot, &b)| (b, slot)).collect();
    for (&b, _) in l.in_place.iter() {
        l.buffers[b].storage = Storage::Arena(slot_of[&root(b)]);
    }
    let mut requests = Vec::with_capacity(slots.len());
    for (slot, &b) in slots.iter().enumerate() {
        let (first_step, last_step) = l.life[&b];
        let buffer = &mut l.buffers[b];
        buffer.storage = Storage::Arena(slot);
        let (bytes, scaled) = arena_bytes(buffer);
        requests.push(BufferRequest {
            bytes_per_batch: if scaled { bytes } else { 0 },
            fixed_bytes: if scaled { 0 } else { bytes },
            first_step,
            last_step,
        });
    }
    let arena = memory::plan(&requests)?;
    let graph = without_baked_constants(graph, &l.of_value);
    let dynamic = l.analysis.map(|a| Arc::new(a.clone()));
    Ok(Program { graph, buffers: l.buffers, inputs, outputs, body, arena, dynamic })
}

/// A copy of `graph` in which constants that no step reads (weights packed
/// into kernels) hold an empty tensor: the program's graph serves names,
/// types and attributes, and keeping the weights there would hold a second
/// copy of the model for as long as the program lives. Their values keep
/// their types.
fn without_baked_constants(graph: &Graph, read: &HashMap<ValueId, BufferId>) -> Graph {
    let mut g = graph.clone();
    let unread: Vec<ValueId> =
        g.values.iter().filter(|(v, value)| matches!(value.def, ValueDef::Const(_)) && !read.contains_key(v)).map(|(v, _)| v).collect();
    for v in unread {
        let dtype = g.values[v].ty.dtype;
        g.values[v].def = ValueDef::Const(std::sync::Arc::new(d2nn_runtime::Tensor::zeros(dtype, &[0])));
    }
    g
}

/// A buffer's bytes at batch 1, and whether they scale with the batch.
fn arena_bytes(buffer: &Buffer) -> (usize, bool) {
    let elems_fixed: usize = buffer.shape.iter().map(|d| d.resolve(&|_| Some(1)).unwrap_or(0)).product();
    let scaled = buffer.shape.iter().any(|d| matches!(d, Dim::Sym { .. }));
    (elems_fixed * super::element_bytes(buffer.dtype), scaled)
}

fn used_symbols(graph: &Graph) -> Vec<Symbol> {
    let mut syms = Vec::new();
    for (_, v) in graph.values.iter() {
        for d in &v.ty.shape {
            if let Dim::Sym { sym, .. } = d {
                if !syms.contains(sym) {
                    syms.push(*sym);
                }
            }
        }
    }
    syms
}

impl Lowering<'_> {
    fn new_buffer(&mut self, v: ValueId, storage: Storage) -> Result<BufferId, LowerError> {
        let value = &self.graph.values[v];
        if value.ty.shape.iter().any(|d| matches!(d, Dim::Unknown)) {
            return Err(LowerError::DynamicShape {
                value: value.name.clone(),
                ty: TypeDisplay { ty: &value.ty, symbols: &self.graph.symbols }.to_string(),
            });
        }
        let id = self.buffers.len();
        self.buffers.push(Buffer { name: value.name.clone(), dtype: value.ty.dtype, shape: value.ty.shape.clone(), storage });
        self.of_value.insert(v, id);
        Ok(id)
    }

    /// The buffer of `v`, recording a read at step `at`.
    fn read(&mut self, v: ValueId, at: usize) -> Result<BufferId, LowerError> {
        let id = match self.of_value.get(&v) {
            Some(&id) => id,
            None => match &self.graph.values[v].def {
                ValueDef::Const(t) => self.new_buffer(v, Storage::Const(t.clone()))?,
                // Inputs and node outputs are created before any read in a verified graph.
                _ => return Err(LowerError::Undefined(self.graph.values[v].name.clone())),
            },
        };
        let id = self.compacted(v, id);
        if let Some(life) = self.life.get_mut(&id) {
            life.1 = life.1.max(at);
        }
        Ok(id)
    }

    /// The buffer holding `v` in the innermost routed block being lowered:
    /// `full` itself, or the compacted copy each enclosing routed block that
    /// gathers `v` makes when it starts.
    fn compacted(&mut self, v: ValueId, full: BufferId) -> BufferId {
        let mut id = full;
        for k in 0..self.frames.len() {
            if !self.frames[k].gathers.contains(&v) {
                continue;
            }
            id = match self.frames[k].twins.get(&v) {
                Some(&twin) => twin,
                None => {
                    let start = self.frames[k].start;
                    if let Some(life) = self.life.get_mut(&id) {
                        life.1 = life.1.max(start);
                    }
                    let mut twin = self.buffers[full].clone();
                    twin.name = format!("{} (rows of R{k})", twin.name);
                    twin.storage = Storage::Arena(usize::MAX);
                    let twin_id = self.buffers.len();
                    self.buffers.push(twin);
                    self.life.insert(twin_id, (start, start));
                    self.frames[k].twins.insert(v, twin_id);
                    self.frames[k].copies.push((id, twin_id));
                    twin_id
                }
            };
        }
        id
    }

    /// A buffer for a node output written at step `at`.
    fn write(&mut self, v: ValueId, at: usize) -> Result<BufferId, LowerError> {
        let id = self.new_buffer(v, Storage::Arena(usize::MAX))?;
        self.life.insert(id, (at, at));
        Ok(id)
    }

    /// The buffers a step reads at step `at`: the node's operands, except
    /// the constants a kernel has packed or copied into itself (GEMM-based
    /// kernels' weights and biases, layer norm's scale and bias; left
    /// `None`, so they get no buffer and the program does not keep them).
    fn operands(&mut self, node: NodeId, kernel: &Kernel, at: usize) -> Result<Vec<Option<BufferId>>, LowerError> {
        let baked = matches!(kernel, Kernel::Conv(_) | Kernel::Dense(_) | Kernel::Depthwise { .. } | Kernel::ConvTranspose(_) | Kernel::LayerNorm { .. });
        let inputs = &self.graph.nodes[node].inputs;
        inputs.iter().enumerate().map(|(i, v)| v.filter(|_| i == 0 || !baked).map(|v| self.read(v, at)).transpose()).collect()
    }

    /// Lets a `Copy` or `Unary` step write over its input when this node is
    /// the input's only reader (so it dies here) and both take the same
    /// arena bytes: the reshape then moves nothing and the activation runs
    /// in place.
    fn try_in_place(&mut self, node: NodeId, kernel: &Kernel, inputs: &[Option<BufferId>], outputs: &[BufferId]) {
        if !matches!(kernel, Kernel::Copy | Kernel::Unary(_)) || outputs.len() != 1 {
            return;
        }
        let (Some(Some(input)), Some(v)) = (inputs.first(), self.graph.nodes[node].input(0)) else { return };
        let reads_here = self.graph.nodes[node].present_inputs().filter(|&x| x == v).count();
        let dies_here = self.uses.get(&v).copied() == Some(1) && reads_here == 1;
        if dies_here && self.life.contains_key(input) && arena_bytes(&self.buffers[*input]) == arena_bytes(&self.buffers[outputs[0]]) {
            self.in_place.insert(outputs[0], *input);
        }
    }

    /// The fusion chains of `region`; in a dynamic program a chain stays
    /// within one guarded block.
    fn fusion(&self, region: RegionId) -> super::fuse::RegionFusion {
        let owner: HashMap<NodeId, Option<BlockId>> = match self.analysis {
            Some(a) => {
                let mut owner = HashMap::new();
                collect_owners(a, &a.body, None, &mut owner);
                owner
            }
            None => HashMap::new(),
        };
        let together = |x: NodeId, y: NodeId| owner.get(&x) == owner.get(&y);
        super::fuse::region_chains(self.graph, region, &self.uses, &together)
    }

    fn block(&mut self, region: RegionId) -> Result<Vec<Step>, LowerError> {
        let mut steps = Vec::new();
        let mut fusion = self.fusion(region);
        for &n in &self.graph.regions[region].nodes {
            self.node(n, &mut fusion, &mut steps)?;
        }
        Ok(steps)
    }

    /// Lowers a dynamic schedule.
    fn items(&mut self, items: &[Item], fusion: &mut super::fuse::RegionFusion) -> Result<Vec<Step>, LowerError> {
        let mut steps = Vec::new();
        for item in items {
            match *item {
                Item::Node(n) => self.node(n, fusion, &mut steps)?,
                Item::Block(b) => steps.push(self.guarded(b, fusion)?),
            }
        }
        Ok(steps)
    }

    fn guarded(&mut self, b: BlockId, fusion: &mut super::fuse::RegionFusion) -> Result<Step, LowerError> {
        let analysis = self.analysis.expect("lowering a dynamic schedule");
        let block = &analysis.blocks[b];
        let start = self.step;
        self.step += 1;
        let atoms = block
            .local
            .atoms()
            .into_iter()
            .map(|a| self.read(analysis.atoms[a as usize].value(), start).map(|buf| (a, buf)))
            .collect::<Result<Vec<_>, _>>()?;
        let routed = block.mode == Mode::Routed;
        if routed {
            self.frames.push(Frame { gathers: block.gathers.iter().copied().collect(), twins: HashMap::new(), copies: Vec::new(), start });
        }
        let body = self.items(&block.items, fusion);
        let frame = if routed { self.frames.pop() } else { None };
        let body = body?;
        let end = self.step;
        self.step += 1;
        // The outputs are scattered (or zeroed) at the end: alive until then.
        let mut outputs = Vec::new();
        for &v in &block.outputs {
            if let Some(&buf) = self.of_value.get(&v) {
                let buf = self.compacted(v, buf);
                if let Some(life) = self.life.get_mut(&buf) {
                    life.1 = life.1.max(end);
                }
                outputs.push(buf);
            }
        }
        Ok(Step::Block { block: b, atoms, gathers: frame.map(|f| f.copies).unwrap_or_default(), outputs, body })
    }

    /// Lowers one node (an `If` with its branches) into `steps`.
    fn node(&mut self, n: NodeId, fusion: &mut super::fuse::RegionFusion, steps: &mut Vec<Step>) -> Result<(), LowerError> {
        let node = &self.graph.nodes[n];
        if fusion.deferred.contains(&n) || fusion.absorbed.contains(&n) {
            return Ok(());
        }
        if let Some(chain) = fusion.by_last.remove(&n) {
            let at = self.step;
            self.step += 1;
            let mut inputs = self.operands(chain.head, &chain.kernel, at)?;
            if let Some(r) = chain.residual {
                inputs.resize(RESIDUAL_INPUT, None);
                inputs.push(Some(self.read(r, at)?));
            }
            let outputs = vec![self.write(chain.output, at)?];
            steps.push(Step::Node { node: chain.head, kernel: chain.kernel, inputs, outputs });
            return Ok(());
        }
        if let Op::If = node.op {
            let start = self.step;
            self.step += 1;
            let cond = self.read(node.inputs[0].expect("verified If has a condition"), start)?;
            let (then_r, else_r) = (node.regions[0], node.regions[1]);
            let then_block = self.block(then_r)?;
            let else_block = self.block(else_r)?;
            let end = self.step;
            self.step += 1;
            let then_yields = self.graph.regions[then_r].outputs.iter().map(|&v| self.read(v, end)).collect::<Result<_, _>>()?;
            let else_yields = self.graph.regions[else_r].outputs.iter().map(|&v| self.read(v, end)).collect::<Result<_, _>>()?;
            let outputs = node.outputs.iter().map(|&v| self.write(v, end)).collect::<Result<_, _>>()?;
            steps.push(Step::If { node: n, cond, then_block, else_block, then_yields, else_yields, outputs });
        } else {
            let at = self.step;
            self.step += 1;
            let kernel = super::kernels::choose(self.graph, n);
            let inputs = self.operands(n, &kernel, at)?;
            let outputs: Vec<BufferId> = node.outputs.iter().map(|&v| self.write(v, at)).collect::<Result<_, _>>()?;
            self.try_in_place(n, &kernel, &inputs, &outputs);
            let gate = self.analysis.and_then(|a| a.gates.get(&n).copied());
            let output = outputs.first().copied();
            steps.push(Step::Node { node: n, kernel, inputs: inputs.clone(), outputs });
            if let (Some(gi), Some(output)) = (gate, output) {
                // The gated-off rows become exactly 0 right after the product.
                let at = self.step;
                self.step += 1;
                let gate = inputs.get(gi).copied().flatten().ok_or_else(|| LowerError::Undefined(node.name.clone()))?;
                if let Some(life) = self.life.get_mut(&gate) {
                    life.1 = life.1.max(at);
                }
                if let Some(life) = self.life.get_mut(&output) {
                    life.1 = life.1.max(at);
                }
                steps.push(Step::Mask { node: n, gate, output });
            }
        }
        Ok(())
    }
}

/// The innermost guarded block of every root node of a schedule.
fn collect_owners(a: &Analysis, items: &[Item], owner: Option<BlockId>, out: &mut HashMap<NodeId, Option<BlockId>>) {
    for item in items {
        match *item {
            Item::Node(n) => {
                out.insert(n, owner);
            }
            Item::Block(b) => collect_owners(a, &a.blocks[b].items, Some(b), out),
        }
    }
}
