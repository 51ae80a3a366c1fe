//! The module writer: the public API items, the `Model` fields built once
//! from the weights file, and one statement per plan step.

use super::names::Names;
use super::tokens::{self, f32_lit, usize_array, usize_lit};
use super::{Api, BackendError, Generated, Options, Port, WeightsPath};
use crate::dynamic::{Analysis, AtomKind, BlockId, Mode};
use crate::ir::{Dim, Graph, NodeId};
use crate::plan::memory::Placement;
use crate::plan::{BufferId, Kernel, Program, Step, Storage, RESIDUAL_INPUT};
use d2nn_runtime::weights::WeightsWriter;
use d2nn_runtime::{DType, Tensor};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use std::collections::HashMap;

/// The macro a comment statement is written as before formatting.
pub const COMMENT_MARKER: &str = "__d2nnc_comment!";

/// A field of the generated `Model`, built in its constructor.
struct Field {
    ident: Ident,
    ty: TokenStream,
    init: TokenStream,
}

pub struct Writer<'a> {
    graph: &'a Graph,
    p: &'a Program,
    analysis: &'a Analysis,
    options: &'a Options,
    /// The dynamic schedule the program follows (`None`: dense).
    dynamic: Option<&'a Analysis>,
    fields: Vec<Field>,
    field_names: Names,
    consts: Vec<TokenStream>,
    const_names: Names,
    weights: WeightsWriter,
    /// `Model` field of each constant buffer (named up front, declared
    /// and loaded only when some statement reads it).
    const_field: HashMap<BufferId, Ident>,
    used_consts: std::cell::RefCell<std::collections::BTreeSet<BufferId>>,
    input_fields: Vec<Ident>,
    /// Local array holding each knob's value, by knob index.
    knob_locals: Vec<Ident>,
    /// Per guarded block: the scratch lists of its rows and their samples.
    block_lists: HashMap<BlockId, (Ident, Ident)>,
    /// The batch symbol's factor per buffer, checked linear.
    bytes_per_row: Vec<Option<usize>>,
}

/// A step operand: arena bytes to split off, or a slice expression.
enum Source {
    Arena { offset: TokenStream, bytes: TokenStream },
    Direct(TokenStream),
}

fn elem_ty(dtype: DType) -> TokenStream {
    match dtype {
        DType::F32 => quote!(f32),
        DType::I64 => quote!(i64),
        DType::I32 => quote!(i32),
        DType::Bool => quote!(u8),
    }
}

fn elem_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::Bool => "bool",
    }
}

fn lit_str(s: &str) -> proc_macro2::Literal {
    proc_macro2::Literal::string(s)
}

impl<'a> Writer<'a> {
    pub fn new(graph: &'a Graph, p: &'a Program, analysis: &'a Analysis, options: &'a Options) -> Result<Self, BackendError> {
        let mut bytes_per_row = Vec::with_capacity(p.buffers.len());
        for b in &p.buffers {
            let syms = b.shape.iter().filter(|d| matches!(d, Dim::Sym { .. })).count();
            if syms > 1 {
                return Err(BackendError::Value { what: "value", name: b.name.clone(), reason: "its size is not linear in the batch".into() });
            }
            bytes_per_row.push((syms == 1).then(|| b.elements_at(1) * crate::plan::element_bytes(b.dtype)));
        }
        let mut field_names = Names::default();
        for reserved in ["pool", "trace_spec", "scratch"] {
            field_names.reserve(reserved);
        }
        Ok(Writer {
            graph,
            p,
            analysis,
            options,
            dynamic: p.dynamic.as_deref(),
            fields: Vec::new(),
            field_names,
            consts: Vec::new(),
            const_names: Names::default(),
            weights: WeightsWriter::new(),
            const_field: HashMap::new(),
            used_consts: Default::default(),
            input_fields: Vec::new(),
            knob_locals: Vec::new(),
            block_lists: HashMap::new(),
            bytes_per_row,
        })
    }

    fn comment(&self, text: &str) -> TokenStream {
        if !self.options.comments {
            return TokenStream::new();
        }
        let marker: TokenStream = COMMENT_MARKER.trim_end_matches('!').parse().unwrap_or_default();
        let text = lit_str(text);
        quote!(#marker!(#text);)
    }

    fn node_name(&self, node: NodeId) -> &str {
        &self.p.graph.nodes[node].name
    }

    fn node_err(&self, node: NodeId, reason: impl Into<String>) -> BackendError {
        unsupported(self.p, node, reason.into())
    }

    /// `.map_err(Error::at(node, op))?` for a kernel call of `node`.
    fn at(&self, node: NodeId) -> TokenStream {
        let n = &self.p.graph.nodes[node];
        let (name, op) = (lit_str(&n.name), lit_str(n.op.name()));
        quote!(.map_err(Error::at(#name, #op))?)
    }

    /// Adds a `Model` field; returns its identifier.
    fn field(&mut self, hint: &str, ty: TokenStream, init: TokenStream) -> Ident {
        let ident = format_ident!("{}", self.field_names.snake(hint));
        self.fields.push(Field { ident: ident.clone(), ty, init });
        ident
    }

    /// Adds a module constant; returns its identifier.
    fn constant(&mut self, hint: &str, ty: TokenStream, value: TokenStream) -> Ident {
        let ident = format_ident!("{}", self.const_names.screaming(hint));
        self.consts.push(quote!(const #ident: #ty = #value;));
        ident
    }

    /// Stores `data` in the weights file and returns the expression reading it back.
    fn weight_f32(&mut self, name: &str, data: &[f32]) -> TokenStream {
        let index = usize_lit(self.weights.push_f32(name, data));
        let (name, len) = (lit_str(name), usize_lit(data.len()));
        quote!(weights.f32(#index, #name, #len)?)
    }

    fn weight_tensor(&mut self, name: &str, t: &Tensor) -> TokenStream {
        let (index, reader) = match t {
            Tensor::F32(a) => (self.weights.push_f32(name, &a.iter().copied().collect::<Vec<_>>()), quote!(f32)),
            Tensor::I64(a) => (self.weights.push_i64(name, &a.iter().copied().collect::<Vec<_>>()), quote!(i64)),
            Tensor::I32(a) => (self.weights.push_i32(name, &a.iter().copied().collect::<Vec<_>>()), quote!(i32)),
            Tensor::Bool(a) => (self.weights.push_bool(name, &a.iter().copied().collect::<Vec<_>>()), quote!(bool_bytes)),
        };
        let (index, lname, len) = (usize_lit(index), lit_str(name), usize_lit(t.len()));
        quote!(weights.#reader(#index, #lname, #len)?)
    }

    /// A `Model` field holding a bias (or `None`), as the kernel call's argument.
    fn bias_field(&mut self, hint: &str, bias: Option<&[f32]>) -> TokenStream {
        match bias {
            Some(b) => {
                let read = self.weight_f32(&format!("{hint}.bias"), b);
                let f = self.field(&format!("{hint}_bias"), quote!(Vec<f32>), read);
                quote!(Some(&self.#f[..]))
            }
            None => quote!(None),
        }
    }

    /// Stores the f32 weight constant `v` a kernel packs (read from the
    /// source graph) and returns the expression reading it back.
    fn packed_weight(&mut self, v: crate::ir::ValueId, node: NodeId) -> Result<TokenStream, BackendError> {
        let w = self.source_const(v, node)?.as_f32().map_err(|_| self.node_err(node, "its weight is not f32"))?.iter().copied().collect::<Vec<f32>>();
        let name = self.graph.values[v].name.clone();
        Ok(self.weight_f32(&name, &w))
    }

    /// The source graph's value of constant `v` (packed weights keep their value there).
    fn source_const(&self, v: crate::ir::ValueId, node: NodeId) -> Result<&'a Tensor, BackendError> {
        self.graph.const_value(v).filter(|t| !t.is_empty() || self.graph.values[v].ty.shape.iter().any(|d| d.known() == Some(0))).ok_or_else(|| self.node_err(node, format!("its weight `{}` is not a constant of the model", self.graph.values[v].name)))
    }

    fn bytes(&self, b: BufferId) -> TokenStream {
        let buf = &self.p.buffers[b];
        let size = crate::plan::element_bytes(buf.dtype);
        match self.bytes_per_row[b] {
            Some(per) => {
                scaled(per, quote!(n))
            }
            None => usize_lit(buf.elements_at(1) * size).into_token_stream(),
        }
    }

    fn offset(&self, slot: usize, name: &str) -> Result<TokenStream, BackendError> {
        let place = self.p.arena.placements.get(slot).ok_or_else(|| BackendError::Value { what: "buffer", name: name.into(), reason: "has no arena slot".into() })?;
        Ok(match *place {
            Placement::Batch { offset: 0 } => quote!(0),
            Placement::Batch { offset } => {
                scaled(offset, quote!(nb))
            }
            Placement::Fixed { offset } => {
                let (per, o) = (usize_lit(self.p.arena.bytes_per_batch), usize_lit(offset));
                quote!(#per * nb + #o)
            }
        })
    }

    fn source(&self, b: BufferId) -> Result<Source, BackendError> {
        let buf = &self.p.buffers[b];
        Ok(match &buf.storage {
            Storage::Arena(slot) => Source::Arena { offset: self.offset(*slot, &buf.name)?, bytes: self.bytes(b) },
            Storage::Input(i) => {
                let f = &self.input_fields[*i];
                Source::Direct(quote!(inputs.#f))
            }
            Storage::Const(_) => {
                let f = self.const_field.get(&b).ok_or_else(|| BackendError::Value { what: "constant", name: buf.name.clone(), reason: "was not named".into() })?;
                self.used_consts.borrow_mut().insert(b);
                Source::Direct(quote!(&self.#f[..]))
            }
            Storage::Knob(k) => {
                let local = &self.knob_locals[*k];
                Source::Direct(quote!(&#local[..]))
            }
        })
    }

    /// A block calling `call` with the operands bound as `x0, x1, …`
    /// (typed slices) and the arena output `out` as `y`.
    fn io(&self, inputs: &[(BufferId, TokenStream)], out: (BufferId, TokenStream), call: TokenStream) -> Result<TokenStream, BackendError> {
        let mut reads = Vec::new();
        let mut binds = Vec::new();
        let mut read_names = Vec::new();
        for (i, (b, ty)) in inputs.iter().enumerate() {
            let x = format_ident!("x{i}");
            match self.source(*b)? {
                Source::Arena { offset, bytes } => {
                    let r = format_ident!("r{}", reads.len());
                    reads.push(quote!((#offset, #bytes)));
                    binds.push(quote!(let #x: &[#ty] = elems(#r)?;));
                    read_names.push(r);
                }
                // Byte-level steps (copies, row gathers) see typed slices as bytes.
                Source::Direct(expr) if ty.to_string() == "u8" && self.p.buffers[*b].dtype != DType::Bool => {
                    let own = elem_ty(self.p.buffers[*b].dtype);
                    binds.push(quote!(let #x: &[u8] = as_bytes::<#own>(#expr);));
                }
                Source::Direct(expr) => binds.push(quote!(let #x: &[#ty] = #expr;)),
            }
        }
        let (ob, oty) = out;
        let Source::Arena { offset, bytes } = self.source(ob)? else {
            return Err(BackendError::Value { what: "buffer", name: self.p.buffers[ob].name.clone(), reason: "a step writes it but it is not in the arena".into() });
        };
        Ok(quote! {{
            let ([#(#read_names),*], w) = arena.split_array([#(#reads),*], (#offset, #bytes))?;
            #(#binds)*
            let y: &mut [#oty] = elems_mut(w)?;
            #call
        }})
    }

    fn same_slot(&self, a: BufferId, b: BufferId) -> bool {
        matches!((&self.p.buffers[a].storage, &self.p.buffers[b].storage), (Storage::Arena(x), Storage::Arena(y)) if x == y)
    }

    /// A read-only typed view of buffer `b` bound to `name`.
    fn view(&self, b: BufferId, name: &Ident) -> Result<TokenStream, BackendError> {
        let ty = elem_ty(self.p.buffers[b].dtype);
        Ok(match self.source(b)? {
            Source::Arena { offset, bytes } => quote!(let #name: &[#ty] = elems(arena.view::<u8>(#offset, #bytes)?)?;),
            Source::Direct(expr) => quote!(let #name: &[#ty] = #expr;),
        })
    }

    /// Copies buffer `src` (any storage) into arena buffer `dst`.
    fn copy_into(&self, src: BufferId, dst: BufferId, node: NodeId) -> Result<TokenStream, BackendError> {
        if self.same_slot(src, dst) {
            return Ok(TokenStream::new());
        }
        let at = self.at(node);
        let src_ty = elem_ty(self.p.buffers[src].dtype);
        let bytes_of = quote!(as_bytes::<#src_ty>);
        match self.source(src)? {
            Source::Arena { .. } => self.io(&[(src, quote!(u8))], (dst, quote!(u8)), quote!(compiled::copy(x0, y)#at;)),
            Source::Direct(expr) => {
                let Source::Arena { offset, bytes } = self.source(dst)? else {
                    return Err(BackendError::Value { what: "buffer", name: self.p.buffers[dst].name.clone(), reason: "is not in the arena".into() });
                };
                Ok(quote! {{
                    let y: &mut [u8] = arena.view_mut::<u8>(#offset, #bytes)?;
                    compiled::copy(#bytes_of(#expr), y)#at;
                }})
            }
        }
    }

    /// Statements of a list of steps.
    fn steps(&mut self, steps: &[Step]) -> Result<TokenStream, BackendError> {
        let mut out = TokenStream::new();
        for step in steps {
            out.extend(self.step(step)?);
        }
        Ok(out)
    }

    fn step(&mut self, step: &Step) -> Result<TokenStream, BackendError> {
        match step {
            Step::Node { node, kernel, inputs, outputs } => self.node(*node, kernel, inputs, outputs),
            Step::If { node, cond, then_block, else_block, then_yields, else_yields, outputs } => {
                let c = format_ident!("cond");
                let view = self.view(*cond, &c)?;
                let comment = self.comment(&format!("`If` {}: one condition for the whole batch", self.node_name(*node)));
                let (then_rec, else_rec) = match self.dynamic.and_then(|a| a.branches.get(node)) {
                    Some([t, e]) => (self.record(*t, quote!(samples), quote!(samples.len())), self.record(*e, quote!(samples), quote!(samples.len()))),
                    None => (TokenStream::new(), TokenStream::new()),
                };
                let then_body = self.steps(then_block)?;
                let else_body = self.steps(else_block)?;
                let mut then_copy = TokenStream::new();
                for (&y, &o) in then_yields.iter().zip(outputs) {
                    then_copy.extend(self.copy_into(y, o, *node)?);
                }
                let mut else_copy = TokenStream::new();
                for (&y, &o) in else_yields.iter().zip(outputs) {
                    else_copy.extend(self.copy_into(y, o, *node)?);
                }
                let (name, op) = (lit_str(self.node_name(*node)), lit_str("If"));
                Ok(quote! {
                    #comment
                    let taken = {
                        #view
                        if #c.len() != 1 {
                            return Err(Error::Node { node: #name, op: #op, source: KernelError::Length { what: "condition", expected: 1, actual: #c.len() } });
                        }
                        #c[0] != 0
                    };
                    if taken {
                        #then_rec
                        #then_body
                        #then_copy
                    } else {
                        #else_rec
                        #else_body
                        #else_copy
                    }
                })
            }
            Step::Block { block, atoms, gathers, outputs, body } => self.block(*block, atoms, gathers, outputs, body),
            Step::Mask { node, gate, output } => {
                let g = format_ident!("gate");
                let gty = elem_ty(self.p.buffers[*gate].dtype);
                let zero = if self.p.buffers[*gate].dtype == DType::F32 { quote!(0.0) } else { quote!(0) };
                let rows = match self.p.buffers[*output].shape.first() {
                    Some(Dim::Sym { factor, .. }) => {
                        scaled(*factor, quote!(n))
                    }
                    Some(Dim::Known(k)) => usize_lit(*k).into_token_stream(),
                    _ => quote!(1),
                };
                let at = self.at(*node);
                let comment = self.comment(&format!("{}: rows whose gate is 0 become exactly 0", self.node_name(*node)));
                let body = self.io(&[(*gate, gty.clone())], (*output, quote!(u8)), quote! {
                    let #g = x0;
                    compiled::mask_rows(y, #rows, |r| compiled::at(#g, r) == #zero)#at;
                })?;
                Ok(quote!(#comment #body))
            }
        }
    }

    /// Records that region `block` ran on `rows_run` rows for `samples`.
    fn record(&self, block: BlockId, samples: TokenStream, rows_run: TokenStream) -> TokenStream {
        let k = usize_lit(block);
        quote! {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, #k, #samples, #rows_run);
            }
        }
    }

    fn block(&mut self, block: BlockId, atoms: &[(crate::dynamic::AtomId, BufferId)], gathers: &[(BufferId, BufferId)], outputs: &[BufferId], body: &[Step]) -> Result<TokenStream, BackendError> {
        let analysis = self.dynamic.ok_or_else(|| BackendError::Value { what: "region", name: format!("R{block}"), reason: "a guarded block in a program without a dynamic schedule".into() })?;
        let b = &analysis.blocks[block];
        let (rows_list, samples_list) = self.block_lists.get(&block).cloned().ok_or_else(|| BackendError::Value { what: "region", name: format!("R{block}"), reason: "has no scratch lists".into() })?;
        // The guard, one boolean per row, over the atoms' values.
        let mut views = TokenStream::new();
        let mut atom_ident = HashMap::new();
        for (i, &(a, buf)) in atoms.iter().enumerate() {
            let id = format_ident!("d{i}");
            views.extend(self.view(buf, &id)?);
            atom_ident.insert(a, (id, self.p.buffers[buf].dtype));
        }
        let literal = |atom: crate::dynamic::AtomId, positive: bool| -> TokenStream {
            let Some((id, dtype)) = atom_ident.get(&atom) else { return quote!(false) };
            let float = *dtype == DType::F32;
            // Negations as the opposite comparison: NaN compares alike both ways.
            let (value, holds_if_equal) = match analysis.atoms[atom as usize].kind {
                AtomKind::Test { .. } if float => (quote!(0.0), false),
                AtomKind::Test { .. } => (quote!(0), false),
                AtomKind::Choice { choice, .. } if float => (f32_lit(choice as f32), true),
                AtomKind::Choice { choice, .. } => (proc_macro2::Literal::i64_unsuffixed(choice as i64).into_token_stream(), true),
            };
            if holds_if_equal == positive {
                quote!(compiled::at(#id, i) == #value)
            } else {
                quote!(compiled::at(#id, i) != #value)
            }
        };
        let several = b.local.terms().len() > 1;
        let terms: Vec<TokenStream> = b
            .local
            .terms()
            .iter()
            .map(|term| {
                if term.is_empty() {
                    return quote!(true);
                }
                let lits = term.iter().map(|l| literal(l.atom, l.positive));
                if several && term.len() > 1 {
                    quote!((#(#lits)&&*))
                } else {
                    quote!(#(#lits)&&*)
                }
            })
            .collect();
        let guard = if terms.is_empty() { quote!(false) } else { quote!(#(#terms)||*) };
        let nodes: Vec<String> = analysis.block_nodes(block).iter().map(|&n| self.p.graph.nodes[n].name.clone()).collect();
        let mode = match &b.mode {
            Mode::Routed => "routed: runs on the rows whose guard holds only".to_string(),
            Mode::Batch => "one decision for the whole batch".to_string(),
            Mode::WholeBatch { reason } => format!("whole batch when any row needs it ({reason})"),
        };
        let header = self.comment(&format!(
            "Region R{block}: where {} ({mode}).\nNodes: {}",
            analysis.guard_text(&b.local),
            super::super::summarize(&nodes, 12)
        ));
        let mut zero_outputs = TokenStream::new();
        let mut scatter_outputs = TokenStream::new();
        let block_name = lit_str(&format!("R{block}"));
        let at = quote!(.map_err(Error::at(#block_name, "region"))?);
        for &o in outputs {
            let buf = &self.p.buffers[o];
            let Storage::Arena(slot) = buf.storage else { continue };
            let (offset, bytes) = (self.offset(slot, &buf.name)?, self.bytes(o));
            match self.bytes_per_row[o] {
                Some(rb) => {
                    let rb = usize_lit(rb);
                    zero_outputs.extend(quote!(routing::scatter_rows(arena.view_mut::<u8>(#offset, #bytes)?, #rb, &[])#at;));
                    scatter_outputs.extend(quote!(routing::scatter_rows(arena.view_mut::<u8>(#offset, #bytes)?, #rb, #rows_list)#at;));
                }
                None => zero_outputs.extend(quote!(arena.view_mut::<u8>(#offset, #bytes)?.fill(0);)),
            }
        }
        let record_none = self.record(block, quote!(#samples_list), quote!(0));
        let inner = self.steps(body)?;
        let run = if b.mode == Mode::Routed {
            let mut gather = TokenStream::new();
            for &(full, twin) in gathers {
                let rb = self.bytes_per_row[full].ok_or_else(|| BackendError::Value { what: "value", name: self.p.buffers[full].name.clone(), reason: "does not scale with the batch and cannot be compacted".into() })?;
                let rb = usize_lit(rb);
                gather.extend(self.io(&[(full, quote!(u8))], (twin, quote!(u8)), quote!(routing::gather_rows(x0, #rb, #rows_list, y)#at;))?);
            }
            let record = self.record(block, quote!(#samples_list), quote!(#rows_list.len()));
            quote! {
                #record
                #gather
                {
                    let n = #rows_list.len();
                    let samples: &[usize] = #samples_list;
                    #inner
                }
                #scatter_outputs
            }
        } else {
            let record = self.record(block, quote!(#samples_list), quote!(samples.len()));
            quote! {
                #record
                #inner
            }
        };
        Ok(quote! {
            #header
            #rows_list.clear();
            {
                #views
                for i in 0..samples.len() {
                    if #guard {
                        #rows_list.push(i);
                    }
                }
            }
            compiled::map_samples(#samples_list, samples, #rows_list);
            if #rows_list.is_empty() {
                #record_none
                #zero_outputs
            } else {
                #run
            }
        })
    }

    fn node(&mut self, node: NodeId, kernel: &Kernel, inputs: &[Option<BufferId>], outputs: &[BufferId]) -> Result<TokenStream, BackendError> {
        let p: &'a Program = self.p;
        let operand = |i: usize| inputs.get(i).copied().flatten().ok_or_else(|| unsupported(p, node, format!("required input {i} is missing")));
        let out = *outputs.first().ok_or_else(|| unsupported(p, node, "it has no output".into()))?;
        let at = self.at(node);
        let n = &p.graph.nodes[node];
        let out_buf = &p.buffers[out];
        let comment = self.comment(&format!(
            "{} ({}): {} -> {} {}",
            n.name,
            n.op.name(),
            crate::plan::print::describe(kernel),
            out_buf.name,
            shape_text(&out_buf.shape)
        ));
        let hint = if n.name.is_empty() { n.op.name().to_string() } else { n.name.clone() };
        let f32t = quote!(f32);
        let body = match kernel {
            Kernel::Reference => {
                return Err(self.node_err(node, "no runtime kernel covers it with these operand types or attributes (the plan executor falls back to the interpreter here)"));
            }
            Kernel::Copy => {
                let src = operand(0)?;
                if self.same_slot(src, out) {
                    return Ok(self.comment(&format!("{} ({}): same bytes, nothing to do", n.name, n.op.name())));
                }
                self.copy_into(src, out, node)?
            }
            Kernel::Unary(op) if self.same_slot(operand(0)?, out) => {
                let op = tokens::enum_value("Unary", op);
                let Source::Arena { offset, bytes } = self.source(out)? else { return Err(self.node_err(node, "in-place output outside the arena")) };
                quote! {{
                    let y: &mut [f32] = elems_mut(arena.view_mut::<u8>(#offset, #bytes)?)?;
                    elementwise::unary_in_place_par(&self.pool, MIN_PARALLEL_OUTPUTS, #op, y);
                }}
            }
            Kernel::Unary(op) => {
                let op = tokens::enum_value("Unary", op);
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (1, 1), |x, y| elementwise::unary(#op, x, y))#at;))?
            }
            Kernel::Binary(b) => {
                let op = tokens::enum_value("Binary", &b.op);
                let dims = b.dims.iter().map(|d| match d {
                    Dim::Known(k) => usize_lit(*k).into_token_stream(),
                    Dim::Sym { factor, .. } => {
                        scaled(*factor, quote!(n))
                    }
                    Dim::Unknown => quote!(0),
                });
                let (sa, sb) = (usize_array(&b.a_strides), usize_array(&b.b_strides));
                self.io(&[(operand(0)?, f32t.clone()), (operand(1)?, f32t.clone())], (out, f32t), quote!(elementwise::binary_strided(#op, x0, x1, &[#(#dims),*], &#sa, &#sb, y)#at;))?
            }
            Kernel::Pool(g) => {
                let geometry = self.constant(&hint, quote!(Pool2d), tokens::pool2d(g));
                let unit_in = usize_lit(g.h.input * g.w.input);
                let unit_out = usize_lit(g.h.output * g.w.output);
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (#unit_in, #unit_out), |x, y| pool::pool2d(&#geometry, x, y))#at;))?
            }
            Kernel::GlobalPool { kind, plane } => {
                let kind = tokens::enum_value("GlobalKind", kind);
                let plane = usize_lit(*plane);
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (#plane, 1), |x, y| pool::global_pool(#kind, #plane, x, y))#at;))?
            }
            Kernel::Softmax { log, len, inner } => {
                let (l, i, unit) = (usize_lit(*len), usize_lit(*inner), usize_lit(len * inner));
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (#unit, #unit), |x, y| softmax::softmax(#log, #l, #i, x, y))#at;))?
            }
            Kernel::Reduce { kind, len, inner } => {
                let kind = tokens::enum_value("ReduceKind", kind);
                let (l, i, unit) = (usize_lit(*len), usize_lit(*inner), usize_lit(len * inner));
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (#unit, #i), |x, y| reduce::reduce(#kind, #l, #i, x, y))#at;))?
            }
            Kernel::BatchNorm { bn, plane } => {
                let (mean, factor, bias) = bn.folded();
                let (mean, factor, bias) = (tokens::f64_vec(mean), tokens::f64_vec(factor), tokens::f64_vec(bias));
                let field = self.field(&hint, quote!(BatchNorm), quote!(BatchNorm::from_folded(#mean, #factor, #bias)#at));
                let plane = usize_lit(*plane);
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(norm::batch_norm(&self.#field, #plane, x0, y)#at;))?
            }
            Kernel::Conv(c) => {
                let geometry = self.constant(&hint, quote!(Conv2d), tokens::conv2d(&c.geometry));
                let read = self.packed_weight(c.weight_value, node)?;
                let weights = self.field(&hint, quote!(ConvWeights), quote!(ConvWeights::pack(&#geometry, &#read)#at));
                let bias = self.bias_field(&hint, c.bias.as_deref().map(Vec::as_slice));
                let act = tokens::enum_value("Activation", &c.fused.activation);
                let mut ins = vec![(operand(0)?, f32t.clone())];
                let residual = if c.fused.residual {
                    ins.push((operand(RESIDUAL_INPUT)?, f32t.clone()));
                    quote!(Some(x1))
                } else {
                    quote!(None)
                };
                self.io(&ins, (out, f32t), quote! {
                    let epilogue = ConvEpilogue { bias: #bias, residual: #residual, activation: #act };
                    self.#weights.run(&#geometry, epilogue, x0, y, &self.pool)#at;
                })?
            }
            Kernel::Depthwise { geometry, weights, bias, fused } => {
                let g = self.constant(&hint, quote!(Depthwise), tokens::depthwise(geometry));
                let read = self.weight_f32(&format!("{hint}.weight"), weights);
                let w = self.field(&hint, quote!(Vec<f32>), read);
                let bias = self.bias_field(&hint, bias.as_deref().map(Vec::as_slice));
                let act = tokens::enum_value("Activation", &fused.activation);
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(depthwise::depthwise(&#g, &self.#w, #bias, #act, x0, y, &self.pool)#at;))?
            }
            Kernel::Dense(d) => {
                let read = self.packed_weight(d.weight_value, node)?;
                let (k, nn, t) = (usize_lit(d.k), usize_lit(d.n), d.transposed);
                let weights = self.field(&hint, quote!(DenseWeights), quote!(DenseWeights::pack(&#read, #k, #nn, #t)#at));
                let bias = self.bias_field(&hint, d.bias.as_deref().map(Vec::as_slice));
                let act = tokens::enum_value("Activation", &d.fused.activation);
                let mut ins = vec![(operand(0)?, f32t.clone())];
                let residual = if d.fused.residual {
                    ins.push((operand(RESIDUAL_INPUT)?, f32t.clone()));
                    quote!(Some(x1))
                } else {
                    quote!(None)
                };
                self.io(&ins, (out, f32t), quote!(self.#weights.run(#bias, #residual, #act, x0, y, &self.pool)#at;))?
            }
            Kernel::Transpose(t) => {
                let ty = elem_ty(out_buf.dtype);
                let init = copy_args_init(t.args(), &at);
                let f = self.field(&hint, quote!(copy::Transpose), init);
                self.io(&[(operand(0)?, ty.clone())], (out, ty), quote!(copy::transpose(&self.#f, x0, y)#at;))?
            }
            Kernel::Slice(s) => {
                let ty = elem_ty(out_buf.dtype);
                let init = copy_args_init(s.args(), &at);
                let f = self.field(&hint, quote!(copy::Slice), init);
                self.io(&[(operand(0)?, ty.clone())], (out, ty), quote!(copy::slice(&self.#f, x0, y)#at;))?
            }
            Kernel::Gather(g) => {
                let ty = elem_ty(out_buf.dtype);
                let (axis, inner, indices) = g.parts();
                let indices: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let (axis, inner, indices) = (usize_lit(axis), usize_lit(inner), tokens::i64_array(&indices));
                let f = self.field(&hint, quote!(copy::Gather), quote!(copy::Gather::new(#axis, #inner, &#indices)#at));
                self.io(&[(operand(0)?, ty.clone())], (out, ty), quote!(copy::gather(&self.#f, x0, y)#at;))?
            }
            Kernel::Pad { geometry, fill } => {
                let ty = elem_ty(out_buf.dtype);
                let init = copy_args_init(geometry.args(), &at);
                let f = self.field(&hint, quote!(copy::Pad), init);
                let fill = match fill {
                    Tensor::F32(a) => f32_lit(a.iter().next().copied().unwrap_or(0.0)),
                    Tensor::I64(a) => proc_macro2::Literal::i64_suffixed(a.iter().next().copied().unwrap_or(0)).into_token_stream(),
                    Tensor::I32(a) => proc_macro2::Literal::i32_suffixed(a.iter().next().copied().unwrap_or(0)).into_token_stream(),
                    Tensor::Bool(a) => proc_macro2::Literal::u8_suffixed(u8::from(a.iter().next().copied().unwrap_or(false))).into_token_stream(),
                };
                self.io(&[(operand(0)?, ty.clone())], (out, ty), quote!(copy::pad(&self.#f, #fill, x0, y)#at;))?
            }
            Kernel::ReduceOverBatch { kind, len, inner } => {
                let kind = tokens::enum_value("ReduceKind", kind);
                let len = dim_expr(len);
                let i = usize_lit(*inner);
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote! {
                    let len = #len;
                    for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (len * #i, #i), |x, y| reduce::reduce(#kind, len, #i, x, y))#at;
                })?
            }
            Kernel::Compare(k) => {
                let op = tokens::enum_value("Compare", &k.op);
                let (a, b) = (operand(0)?, operand(1)?);
                let dims = k.dims.iter().map(dim_expr);
                let (sa, sb) = (usize_array(&k.a_strides), usize_array(&k.b_strides));
                let ins = [(a, elem_ty(p.buffers[a].dtype)), (b, elem_ty(p.buffers[b].dtype))];
                self.io(&ins, (out, quote!(u8)), quote!(logic::compare_strided(#op, x0, x1, &[#(#dims),*], &#sa, &#sb, y)#at;))?
            }
            Kernel::Where(k) => {
                let (c, a, b) = (operand(0)?, operand(1)?, operand(2)?);
                let dims = k.dims.iter().map(dim_expr);
                let (sc, sa, sb) = (usize_array(&k.cond_strides), usize_array(&k.x_strides), usize_array(&k.y_strides));
                let ty = elem_ty(out_buf.dtype);
                let ins = [(c, quote!(u8)), (a, ty.clone()), (b, ty.clone())];
                self.io(&ins, (out, ty), quote!(logic::where_strided(x0, x1, x2, &[#(#dims),*], [&#sc, &#sa, &#sb], y)#at;))?
            }
            Kernel::Logic(k) => {
                // The op is spelled through the `logic` module the generated
                // code already imports, so models without logical ops keep
                // their exact imports.
                let op = tokens::enum_value("logic::BoolOp", &k.op);
                let dims = k.dims.iter().map(dim_expr);
                let (sa, sb) = (usize_array(&k.a_strides), usize_array(&k.b_strides));
                let ins = [(operand(0)?, quote!(u8)), (operand(1)?, quote!(u8))];
                self.io(&ins, (out, quote!(u8)), quote!(logic::bool_strided(#op, x0, x1, &[#(#dims),*], &#sa, &#sb, y)#at;))?
            }
            Kernel::Not => self.io(&[(operand(0)?, quote!(u8))], (out, quote!(u8)), quote!(logic::not(x0, y)#at;))?,
            Kernel::Cast { from, to } => {
                let x = operand(0)?;
                self.io(&[(x, elem_ty(*from))], (out, elem_ty(*to)), quote!(cast::cast(x0, y)#at;))?
            }
            Kernel::ArgReduce(g) => {
                let x = operand(0)?;
                let (max, last, len, inner) = (g.max, g.select_last_index, usize_lit(g.len), usize_lit(g.inner));
                self.io(&[(x, elem_ty(p.buffers[x].dtype))], (out, quote!(i64)), quote! {
                    reduce::arg_reduce(&ArgReduce { max: #max, select_last_index: #last, len: #len, inner: #inner }, x0, y)#at;
                })?
            }
            Kernel::OneHot { geometry, off_on } => {
                let x = operand(0)?;
                let pair = |t: &Tensor| -> Option<(TokenStream, TokenStream)> {
                    Some(match t {
                        Tensor::F32(a) => (f32_lit(*a.iter().next()?), f32_lit(*a.iter().nth(1)?)),
                        Tensor::I64(a) => (proc_macro2::Literal::i64_suffixed(*a.iter().next()?).into_token_stream(), proc_macro2::Literal::i64_suffixed(*a.iter().nth(1)?).into_token_stream()),
                        Tensor::I32(a) => (proc_macro2::Literal::i32_suffixed(*a.iter().next()?).into_token_stream(), proc_macro2::Literal::i32_suffixed(*a.iter().nth(1)?).into_token_stream()),
                        Tensor::Bool(a) => (proc_macro2::Literal::u8_suffixed(u8::from(*a.iter().next()?)).into_token_stream(), proc_macro2::Literal::u8_suffixed(u8::from(*a.iter().nth(1)?)).into_token_stream()),
                    })
                };
                let (off, on) = pair(off_on).ok_or_else(|| self.node_err(node, "its values are not an [off, on] pair"))?;
                let (depth, inner) = (usize_lit(geometry.depth), usize_lit(geometry.inner));
                self.io(&[(x, elem_ty(p.buffers[x].dtype))], (out, elem_ty(out_buf.dtype)), quote! {
                    one_hot::one_hot(&OneHot { depth: #depth, inner: #inner }, x0, #off, #on, y)#at;
                })?
            }
            Kernel::LayerNorm { geometry, scale, bias } => {
                let read = self.weight_f32(&format!("{hint}.scale"), scale);
                let sf = self.field(&format!("{hint}_scale"), quote!(Vec<f32>), read);
                let bias = self.bias_field(&hint, bias.as_deref().map(Vec::as_slice));
                let (row, eps) = (usize_lit(geometry.row), f32_lit(geometry.epsilon));
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote! {
                    let g = LayerNorm { row: #row, epsilon: #eps };
                    for_units(&self.pool, MIN_PARALLEL_OUTPUTS, x0, y, (#row, #row), |x, y| norm::layer_norm(&g, &self.#sf, #bias, x, y))#at;
                })?
            }
            Kernel::ConvTranspose(c) => {
                let geometry = self.constant(&hint, quote!(ConvTranspose2d), tokens::conv_transpose2d(&c.geometry));
                let read = self.packed_weight(c.weight_value, node)?;
                let weights = self.field(&hint, quote!(ConvTransposeWeights), quote!(ConvTransposeWeights::pack(&#geometry, &#read)#at));
                let bias = self.bias_field(&hint, c.bias.as_deref().map(Vec::as_slice));
                self.io(&[(operand(0)?, f32t.clone())], (out, f32t), quote!(conv_transpose::conv_transpose2d(&#geometry, &self.#weights, #bias, x0, y, &self.pool)#at;))?
            }
            Kernel::Concat { rows } => {
                let ty = elem_ty(out_buf.dtype);
                let ins = (0..inputs.len()).map(|i| operand(i).map(|b| (b, ty.clone()))).collect::<Result<Vec<_>, _>>()?;
                let xs = (0..ins.len()).map(|i| format_ident!("x{i}"));
                let rows = usize_array(rows);
                self.io(&ins, (out, ty), quote!(copy::concat(&#rows, &[#(#xs),*], y)#at;))?
            }
            Kernel::Split { rows } => {
                let ty = elem_ty(out_buf.dtype);
                let x = operand(0)?;
                let rows_t = usize_array(rows);
                let mut all = TokenStream::new();
                for (piece, &o) in outputs.iter().enumerate() {
                    let piece = usize_lit(piece);
                    all.extend(self.io(&[(x, ty.clone())], (o, ty.clone()), quote!(copy::split(&#rows_t, #piece, x0, y)#at;))?);
                }
                all
            }
        };
        Ok(quote!(#comment #body))
    }

    /// The whole module.
    pub fn module(mut self) -> Result<Generated, BackendError> {
        let p = self.p;
        let g = &p.graph;
        let mut api = Api { dynamic: self.dynamic.is_some(), ..Api::default() };
        let mut port_names = Names::default();
        for reserved in ["inputs", "outputs", "knobs", "scratch", "trace", "batch", "n", "nb", "samples", "arena"] {
            port_names.reserve(reserved);
        }
        // Constants: named now, loaded once the body shows which are read.
        for b in 0..p.buffers.len() {
            if matches!(p.buffers[b].storage, Storage::Const(_)) {
                let ident = format_ident!("{}", self.field_names.snake(&p.buffers[b].name));
                self.const_field.insert(b, ident);
            }
        }
        // Inputs.
        let mut input_consts = TokenStream::new();
        let mut input_fields = TokenStream::new();
        let mut input_names = Vec::new();
        let mut batch_code = TokenStream::new();
        let mut input_checks = TokenStream::new();
        let mut run_params = Vec::new();
        let mut run_generics = Vec::new();
        let mut run_checks = TokenStream::new();
        let mut run_slices = Vec::new();
        let mut first_batch_input: Option<(Ident, Ident, usize)> = None;
        for (i, &b) in p.inputs.iter().enumerate() {
            let buf = &p.buffers[b];
            if buf.dtype == DType::Bool {
                return Err(BackendError::Value { what: "input", name: buf.name.clone(), reason: "bool graph inputs are not supported by the Rust back end".into() });
            }
            let field = format_ident!("{}", port_names.snake(&buf.name));
            let upper = field.to_string().to_uppercase();
            let (name_const, shape_const) = (format_ident!("{upper}_NAME"), format_ident!("{upper}_SHAPE"));
            let ty = elem_ty(buf.dtype);
            let dims = dims_tokens(&buf.shape);
            let rank = usize_lit(buf.shape.len());
            let name = lit_str(&buf.name);
            let doc_name = format!("Name of input `{}` in the ONNX model.", buf.name);
            let doc_shape = format!("Shape of input `{}`: {} {}.", buf.name, elem_name(buf.dtype), shape_text(&buf.shape));
            input_consts.extend(quote! {
                #[doc = #doc_name]
                pub const #name_const: &str = #name;
                #[doc = #doc_shape]
                pub const #shape_const: [Dim; #rank] = #dims;
            });
            let doc = format!("`{}`: {} {}, row-major.", buf.name, elem_name(buf.dtype), shape_text(&buf.shape));
            input_fields.extend(quote!(#[doc = #doc] pub #field: &'a [#ty],));
            input_names.push(quote!(#name_const));
            let per = buf.elements_at(1);
            if self.bytes_per_row[b].is_some() && first_batch_input.is_none() {
                let per_lit = usize_lit(per);
                batch_code = quote!(let batch = compiled::batch_of(#name_const, inputs.#field.len(), #per_lit)?;);
                first_batch_input = Some((field.clone(), name_const.clone(), per));
            } else {
                let expected = if self.bytes_per_row[b].is_some() {
                    scaled(per, quote!(batch))
                } else {
                    usize_lit(per).into_token_stream()
                };
                input_checks.extend(quote!(compiled::expect_input(#name_const, inputs.#field.len(), #expected)?;));
            }
            let dparam = format_ident!("D{i}");
            run_generics.push(quote!(#dparam: Dimension));
            run_params.push(quote!(#field: ArrayView<'_, #ty, #dparam>));
            let std_name = format_ident!("{}_std", field);
            run_checks.extend(quote! {
                compiled::check_shape(#name_const, #field.shape(), &#shape_const, &mut batch)?;
                let #std_name = #field.as_standard_layout();
                let #field = #std_name.as_slice().ok_or(Error::Input { name: #name_const, reason: "not contiguous".into() })?;
            });
            run_slices.push(quote!(#field));
            api.inputs.push(Port { name: buf.name.clone(), field: field.to_string(), elem: elem_name(buf.dtype), shape: shape_text(&buf.shape) });
            self.input_fields.push(field);
        }
        if first_batch_input.is_none() {
            batch_code = quote!(let batch = 1usize;);
        }
        // Outputs.
        let mut output_consts = TokenStream::new();
        let mut output_fields_mut = TokenStream::new();
        let mut output_fields_owned = TokenStream::new();
        let mut output_names = Vec::new();
        let mut output_checks = TokenStream::new();
        let mut output_alloc = TokenStream::new();
        let mut output_views = Vec::new();
        let mut output_build = Vec::new();
        let mut output_writes = TokenStream::new();
        let mut out_names = Names::default();
        out_names.reserve("trace");
        for &b in &p.outputs {
            let buf = &p.buffers[b];
            let field = format_ident!("{}", out_names.snake(&buf.name));
            let upper = field.to_string().to_uppercase();
            let (name_const, shape_const) = (format_ident!("{upper}_NAME"), format_ident!("{upper}_SHAPE"));
            let is_bool = buf.dtype == DType::Bool;
            let ty = if is_bool { quote!(bool) } else { elem_ty(buf.dtype) };
            let dims = dims_tokens(&buf.shape);
            let rank = usize_lit(buf.shape.len());
            let name = lit_str(&buf.name);
            let doc_name = format!("Name of output `{}` in the ONNX model.", buf.name);
            let doc_shape = format!("Shape of output `{}`: {} {}.", buf.name, elem_name(buf.dtype), shape_text(&buf.shape));
            output_consts.extend(quote! {
                #[doc = #doc_name]
                pub const #name_const: &str = #name;
                #[doc = #doc_shape]
                pub const #shape_const: [Dim; #rank] = #dims;
            });
            let doc = format!("`{}`: {} {}, row-major.", buf.name, elem_name(buf.dtype), shape_text(&buf.shape));
            output_fields_mut.extend(quote!(#[doc = #doc] pub #field: &'a mut [#ty],));
            output_fields_owned.extend(quote!(#[doc = #doc] pub #field: ArrayD<#ty>,));
            output_names.push(quote!(#name_const));
            let expected = if self.bytes_per_row[b].is_some() {
                scaled(buf.elements_at(1), quote!(batch))
            } else {
                usize_lit(buf.elements_at(1)).into_token_stream()
            };
            output_checks.extend(quote!(compiled::expect_output(#name_const, outputs.#field.len(), #expected)?;));
            let arr = format_ident!("{}_array", field);
            let default = if is_bool { quote!(false) } else { quote!(Default::default()) };
            output_alloc.extend(quote!(let mut #arr = ArrayD::<#ty>::from_elem(IxDyn(&compiled::shape_at(&#shape_const, batch)), #default);));
            output_views.push(quote!(#field: #arr.as_slice_mut().ok_or(Error::Output { name: #name_const, reason: "not contiguous".into() })?));
            output_build.push(quote!(#field: #arr));
            let at = quote!(.map_err(|source| Error::Output { name: #name_const, reason: source.to_string() })?);
            let write = match (self.source(b)?, is_bool) {
                (Source::Arena { offset, bytes }, false) => quote!(compiled::copy(elems(arena.view::<u8>(#offset, #bytes)?)?, outputs.#field)#at;),
                (Source::Arena { offset, bytes }, true) => quote!(compiled::copy_bools(arena.view::<u8>(#offset, #bytes)?, outputs.#field)#at;),
                (Source::Direct(expr), false) => quote!(compiled::copy(#expr, outputs.#field)#at;),
                (Source::Direct(expr), true) => quote!(compiled::copy_bools(#expr, outputs.#field)#at;),
            };
            output_writes.extend(write);
            api.outputs.push(Port { name: buf.name.clone(), field: field.to_string(), elem: elem_name(buf.dtype), shape: shape_text(&buf.shape) });
        }
        // Knobs.
        let mut knob_struct = TokenStream::new();
        let mut knob_default = TokenStream::new();
        let mut knob_locals = TokenStream::new();
        let mut knob_names = Names::default();
        if let Some(a) = self.dynamic {
            for k in &a.knobs {
                let field = format_ident!("{}", knob_names.snake(&k.name));
                let local = format_ident!("knob_{}", field);
                let readers: Vec<&str> = k.atoms.iter().map(|&x| a.atoms[x as usize].name.as_str()).collect();
                let doc = format!(
                    "Threshold `{}`, compared against by {} (the model's value: {}). Raising or lowering it moves samples between paths; see `REGIONS`.",
                    k.name,
                    readers.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
                    k.default
                );
                let default = f32_lit(k.default);
                knob_struct.extend(quote!(#[doc = #doc] pub #field: f32,));
                knob_default.extend(quote!(#field: #default,));
                let len = usize_lit(g.values[k.value].ty.shape.iter().map(|d| d.known().unwrap_or(1)).product());
                let name = lit_str(&k.name);
                knob_locals.extend(quote!(let #local = [compiled::check_knob(#name, knobs.#field)?; #len];));
                api.knobs.push((k.name.clone(), field.to_string(), k.default));
                self.knob_locals.push(local);
            }
            for (k, _) in a.blocks.iter().enumerate() {
                self.block_lists.insert(k, (format_ident!("rows_r{}", k), format_ident!("samples_r{}", k)));
            }
        }
        // Samples: axis 0 of the first input, as the executors count them.
        let samples_expr = match p.inputs.first().map(|&b| &p.buffers[b].shape) {
            Some(shape) => match shape.first() {
                Some(Dim::Sym { factor, .. }) => {
                    scaled(*factor, quote!(batch))
                }
                Some(Dim::Known(k)) => usize_lit(*k).into_token_stream(),
                _ => quote!(1),
            },
            None => quote!(1),
        };
        let body = self.steps(&p.body)?;
        for b in self.used_consts.take() {
            let Storage::Const(t) = &p.buffers[b].storage else { continue };
            let read = self.weight_tensor(&p.buffers[b].name, t);
            let ty = elem_ty(t.dtype());
            self.fields.push(Field { ident: self.const_field[&b].clone(), ty: quote!(Vec<#ty>), init: read });
        }

        // Trace spec and region / path descriptions.
        let (spec, regions, paths) = self.trace_spec_tokens();
        api.regions = regions.clone();
        let (nregions, npaths) = (usize_lit(regions.len()), usize_lit(paths.len()));
        let region_lits = regions.iter().map(|r| lit_str(r));
        let path_lits = paths.iter().map(|r| lit_str(r));
        let mut block_ids: Vec<&BlockId> = self.block_lists.keys().collect();
        block_ids.sort_unstable();
        let list_fields: Vec<TokenStream> = block_ids
            .iter()
            .map(|k| {
                let (r, s) = &self.block_lists[k];
                quote!(#r: Vec<usize>, #s: Vec<usize>,)
            })
            .collect();
        let list_names: Vec<TokenStream> = block_ids
            .iter()
            .map(|k| {
                let (r, s) = &self.block_lists[k];
                quote!(#r, #s,)
            })
            .collect();

        let fields_decl = self.fields.iter().map(|f| {
            let (ident, ty) = (&f.ident, &f.ty);
            quote!(#ident: #ty,)
        });
        let fields_init = self.fields.iter().map(|f| {
            let (ident, init) = (&f.ident, &f.init);
            quote!(#ident: #init,)
        });
        let consts = &self.consts;
        let (per_batch, fixed) = (usize_lit(p.arena.bytes_per_batch), usize_lit(p.arena.fixed_bytes));
        let (n_in, n_out) = (usize_lit(input_names.len()), usize_lit(output_names.len()));
        let weights_static = match &self.options.weights {
            WeightsPath::Relative(r) => Some(lit_str(r)),
            WeightsPath::Absolute(a) => Some(lit_str(&a.display().to_string())),
            WeightsPath::Provided => None,
        }
        .map(|path| {
            quote! {
                /// The weights file: every constant of the model, read once by [`Model::new`].
                static WEIGHTS: &[u8] = include_bytes!(#path);
            }
        });
        let track = self.options.track.iter().map(|t| {
            let t = lit_str(&t.display().to_string());
            quote!(const _: &[u8] = include_bytes!(#t);)
        });
        let module_doc = self.module_doc(&api);
        let dense_per_sample = self.analysis.dense_flops_per_sample;
        let dense_fixed = self.analysis.dense_flops_fixed;
        let knobs_doc = if api.knobs.is_empty() {
            "The model's run-time knobs: this model has none (no decision thresholds, or all were fixed at compile time).".to_string()
        } else {
            "The model's run-time knobs: the thresholds its decisions compare against. `Knobs::default()` holds the model's values.".to_string()
        };
        let (derive_default, knobs_default_impl) = if api.knobs.is_empty() {
            (quote!(, Default), TokenStream::new())
        } else {
            (TokenStream::new(), quote! {
                impl Default for Knobs {
                    fn default() -> Self {
                        Knobs { #knob_default }
                    }
                }
            })
        };
        let tokens = quote! {
            #(#module_doc)*
            #![allow(unused_variables, unused_mut, unused_imports)]

            use d2nn_runtime::compiled::{self, elems, elems_mut, as_bytes};
            use d2nn_runtime::kernels::conv::{Conv2d, ConvEpilogue};
            use d2nn_runtime::kernels::depthwise::{self, Depthwise};
            use d2nn_runtime::kernels::elementwise::{self, Binary, Unary};
            use d2nn_runtime::kernels::norm::{self, BatchNorm};
            use d2nn_runtime::kernels::pool::{self, GlobalKind, Pool2d, PoolAxis, PoolKind};
            use d2nn_runtime::kernels::reduce::{self, ReduceKind};
            use d2nn_runtime::kernels::{cast, copy, logic, one_hot, softmax, KernelError};
            use d2nn_runtime::kernels::conv_transpose::{self, ConvTranspose2d, ConvTransposeWeights};
            use d2nn_runtime::kernels::logic::Compare;
            use d2nn_runtime::kernels::norm::LayerNorm;
            use d2nn_runtime::kernels::one_hot::OneHot;
            use d2nn_runtime::kernels::reduce::ArgReduce;
            use d2nn_runtime::gemm::Activation;
            use d2nn_runtime::layers::{ConvWeights, DenseWeights};
            use d2nn_runtime::pool::{for_units, ThreadPool, MIN_PARALLEL_OUTPUTS};
            use d2nn_runtime::routing;
            use d2nn_runtime::arena::Arena;
            use d2nn_runtime::trace::RegionCost;
            use d2nn_runtime::weights::Weights;
            use d2nn_runtime::ndarray::{ArrayD, ArrayView, Dimension, IxDyn};
            use std::sync::Mutex;

            pub use d2nn_runtime::compiled::{Dim, Error};
            pub use d2nn_runtime::trace::{Trace, TraceSpec};

            #weights_static
            #(#track)*

            #input_consts
            #output_consts
            /// Names of the inputs, in the ONNX model's order.
            pub const INPUT_NAMES: [&str; #n_in] = [#(#input_names),*];
            /// Names of the outputs, in the ONNX model's order.
            pub const OUTPUT_NAMES: [&str; #n_out] = [#(#output_names),*];
            /// The guarded regions, by index (the region numbers of [`Trace`]): where each runs, how, and the ONNX nodes it covers.
            pub const REGIONS: [&str; #nregions] = [#(#region_lits),*];
            /// The distinct paths a sample can take, by index (see [`Model::path_of`]): the decisions along each and its FLOPs.
            pub const PATHS: [&str; #npaths] = [#(#path_lits),*];
            /// FLOPs of the dense model per sample (every node computed), for comparing with [`Trace::flops_executed`].
            pub const DENSE_FLOPS_PER_SAMPLE: u64 = #dense_per_sample;
            /// FLOPs of the dense model independent of the batch.
            pub const DENSE_FLOPS_FIXED: u64 = #dense_fixed;
            /// Scratch arena bytes per sample of the batch.
            pub const ARENA_BYTES_PER_BATCH: usize = #per_batch;
            /// Scratch arena bytes independent of the batch.
            pub const ARENA_FIXED_BYTES: usize = #fixed;

            #(#consts)*

            #[doc = #knobs_doc]
            #[derive(Clone, Copy, Debug, PartialEq #derive_default)]
            pub struct Knobs {
                #knob_struct
            }

            #knobs_default_impl

            /// The caller's input buffers for [`Model::run_into`].
            #[derive(Clone, Copy, Debug)]
            pub struct Inputs<'a> {
                #input_fields
            }

            /// The caller's output buffers for [`Model::run_into`], each sized for the batch.
            #[derive(Debug)]
            pub struct OutputsMut<'a> {
                #output_fields_mut
            }

            /// The outputs of [`Model::run`].
            #[derive(Clone, Debug, PartialEq)]
            pub struct Outputs {
                #output_fields_owned
            }

            /// Reusable memory of [`Model::run_into`]: the scratch arena (grown to the largest batch seen) and the row lists of the guarded regions. A warmed-up run allocates nothing.
            #[derive(Default)]
            pub struct Scratch {
                arena: Arena,
                all_samples: Vec<usize>,
                #(#list_fields)*
            }

            /// The compiled model. Build it once ([`Model::new`] reads and packs the weights); it is `Send + Sync`, and concurrent calls each use their own [`Scratch`].
            pub struct Model {
                pool: ThreadPool,
                trace_spec: TraceSpec,
                scratch: Mutex<Vec<Scratch>>,
                #(#fields_decl)*
            }

            const _: fn() = || {
                fn assert_send_sync<T: Send + Sync>() {}
                assert_send_sync::<Model>();
            };

            impl Model {
                /// The model running every kernel on the calling thread.
                pub fn new() -> Result<Model, Error> {
                    Model::with_threads(1)
                }

                /// The model spreading each kernel over `threads` threads (the caller and `threads - 1` workers).
                pub fn with_threads(threads: usize) -> Result<Model, Error> {
                    let weights = Weights::parse(WEIGHTS)?;
                    Ok(Model {
                        pool: ThreadPool::new(threads),
                        trace_spec: #spec,
                        scratch: Mutex::new(Vec::new()),
                        #(#fields_init)*
                    })
                }

                /// Threads the kernels run on, the caller included.
                pub fn threads(&self) -> usize {
                    self.pool.threads()
                }

                /// The region costs and paths [`Trace`]s are recorded against.
                pub fn trace_spec(&self) -> &TraceSpec {
                    &self.trace_spec
                }

                /// The index in [`PATHS`] of the path sample `sample` took in the run `trace` records.
                pub fn path_of(&self, trace: &Trace, sample: usize) -> Option<usize> {
                    trace.path_of(&self.trace_spec, sample)
                }

                /// Runs the model with the default knobs; checks every input's shape.
                pub fn run<#(#run_generics),*>(&self, #(#run_params),*) -> Result<Outputs, Error> {
                    self.run_with(#(#run_slices,)* &Knobs::default()).map(|(outputs, _)| outputs)
                }

                /// Runs the model with `knobs`; returns the outputs and what ran (the path of each sample, the rows of each region, the FLOPs executed).
                pub fn run_with<#(#run_generics),*>(&self, #(#run_params,)* knobs: &Knobs) -> Result<(Outputs, Trace), Error> {
                    let mut batch: Option<usize> = None;
                    #run_checks
                    let batch = batch.unwrap_or(1);
                    #output_alloc
                    let mut trace = Trace::default();
                    let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
                    let result = self.run_into(
                        Inputs { #(#run_slices),* },
                        OutputsMut { #(#output_views),* },
                        knobs,
                        &mut scratch,
                        Some(&mut trace),
                    );
                    self.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
                    result?;
                    Ok((Outputs { #(#output_build),* }, trace))
                }

                /// Runs the model on the caller's buffers without allocating once `scratch` (and `trace`) have seen a batch this large. The batch is the first batch-scaled input's length over its per-sample size; every other buffer must fit it.
                pub fn run_into(&self, inputs: Inputs<'_>, outputs: OutputsMut<'_>, knobs: &Knobs, scratch: &mut Scratch, mut trace: Option<&mut Trace>) -> Result<(), Error> {
                    #batch_code
                    #input_checks
                    #output_checks
                    #knob_locals
                    compiled::reserve(&mut scratch.arena, ARENA_BYTES_PER_BATCH, ARENA_FIXED_BYTES, batch)?;
                    let Scratch { arena, all_samples, #(#list_names)* } = scratch;
                    compiled::fill_iota(all_samples, #samples_expr);
                    if let Some(t) = &mut trace {
                        t.reset(&self.trace_spec, all_samples.len());
                    }
                    // `nb`: the call's batch (arena offsets scale with it); `n`: the rows of the current frame (fewer inside a routed region).
                    let nb = batch;
                    let n = batch;
                    let samples: &[usize] = all_samples;
                    #body
                    #output_writes
                    Ok(())
                }
            }
        };
        Ok(Generated { tokens, weights: std::mem::take(&mut self.weights).finish(), api })
    }

    fn trace_spec_tokens(&self) -> (TokenStream, Vec<String>, Vec<String>) {
        let cost = |c: &d2nn_runtime::trace::RegionCost| {
            let (a, b) = (c.flops_per_sample, c.flops_fixed);
            quote!(RegionCost { flops_per_sample: #a, flops_fixed: #b })
        };
        match self.dynamic {
            Some(a) => {
                let spec = &a.trace_spec;
                let root = cost(&spec.root);
                let regions = spec.regions.iter().map(cost);
                let paths = match &spec.paths {
                    Some(ps) => {
                        let ps = ps.iter().map(|p| usize_array(p));
                        quote!(Some(vec![#(#ps.to_vec()),*]))
                    }
                    None => quote!(None),
                };
                let (descriptions, paths_text) = super::super::describe_regions(self.p, a);
                (quote!(TraceSpec { root: #root, regions: vec![#(#regions),*], paths: #paths }), descriptions, paths_text)
            }
            None => {
                let root = cost(&d2nn_runtime::trace::RegionCost { flops_per_sample: self.analysis.dense_flops_per_sample, flops_fixed: self.analysis.dense_flops_fixed });
                (quote!(TraceSpec { root: #root, regions: Vec::new(), paths: None }), Vec::new(), Vec::new())
            }
        }
    }

    fn module_doc(&self, api: &Api) -> Vec<TokenStream> {
        let mut lines = vec![
            format!(" The model `{}`, compiled by d2nnc {}.", self.options.source, env!("CARGO_PKG_VERSION")),
            String::new(),
            " Generated code: regenerate it rather than editing it. [`Model::run`] takes ndarray views".into(),
            " and checks their shapes; [`Model::run_into`] runs on caller buffers with a reusable [`Scratch`].".into(),
            String::new(),
        ];
        for port in &api.inputs {
            lines.push(format!(" - input `{}`: {} {}", port.name, port.elem, port.shape));
        }
        for port in &api.outputs {
            lines.push(format!(" - output `{}`: {} {}", port.name, port.elem, port.shape));
        }
        if api.dynamic {
            lines.push(String::new());
            lines.push(" Dynamic execution: each guarded region below runs only for the samples whose".into());
            lines.push(" decisions select it (see `run_into`'s body for the branches).".into());
            lines.push(String::new());
            for r in &api.regions {
                lines.push(format!(" - {}", r.replace('`', "'")));
            }
        }
        for (k, v) in &self.options.fixed {
            lines.push(format!(" Knob `{k}` fixed at {v} when compiling."));
        }
        lines.into_iter().map(|l| quote!(#![doc = #l])).collect()
    }
}

use quote::ToTokens;

/// A dim of an iteration space in the current frame (`n` rows).
fn dim_expr(d: &Dim) -> TokenStream {
    match d {
        Dim::Known(k) => usize_lit(*k).into_token_stream(),
        Dim::Sym { factor, .. } => scaled(*factor, quote!(n)),
        Dim::Unknown => quote!(0),
    }
}

/// `k * var`, or `var` when `k` is 1.
fn scaled(k: usize, var: TokenStream) -> TokenStream {
    if k == 1 {
        var
    } else {
        let k = usize_lit(k);
        quote!(#k * #var)
    }
}

fn unsupported(p: &Program, node: NodeId, reason: String) -> BackendError {
    let n = &p.graph.nodes[node];
    BackendError::Unsupported { node: n.name.clone(), op: n.op.name().to_string(), reason }
}

/// `[Dim::Batch(1), Dim::Known(3), …]`.
fn dims_tokens(shape: &[Dim]) -> TokenStream {
    let dims = shape.iter().map(|d| match d {
        Dim::Known(k) => {
            let k = usize_lit(*k);
            quote!(Dim::Known(#k))
        }
        Dim::Sym { factor, .. } => {
            let f = usize_lit(*factor);
            quote!(Dim::Batch(#f))
        }
        Dim::Unknown => quote!(Dim::Known(0)),
    });
    quote!([#(#dims),*])
}

fn shape_text(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Known(k) => k.to_string(),
            Dim::Sym { factor: 1, .. } => "batch".into(),
            Dim::Sym { factor, .. } => format!("{factor}*batch"),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The constructor call of a data-movement kernel.
fn copy_args_init(args: &d2nn_runtime::kernels::copy::CopyArgs, at: &TokenStream) -> TokenStream {
    use d2nn_runtime::kernels::copy::CopyArgs;
    match args {
        CopyArgs::Transpose { dims, perm } => {
            let (d, p) = (usize_array(dims), usize_array(perm));
            quote!(copy::Transpose::new(&#d, &#p)#at)
        }
        CopyArgs::Slice { dims, start, step, len } => {
            let (d, s, st, l) = (usize_array(dims), usize_array(start), tokens::isize_array(step), usize_array(len));
            quote!(copy::Slice::new(&#d, &#s, &#st, &#l)#at)
        }
        CopyArgs::Pad { dims, begins, ends } => {
            let (d, b, e) = (usize_array(dims), tokens::i64_array(begins), tokens::i64_array(ends));
            quote!(copy::Pad::new(&#d, &#b, &#e)#at)
        }
    }
}

