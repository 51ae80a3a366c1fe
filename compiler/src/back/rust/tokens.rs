//! Rust source tokens for the values generated code is built from: number
//! literals (non-finite floats as named constants) and the runtime's
//! geometry and op descriptors as struct literals.

use d2nn_runtime::kernels::conv::Conv2d;
use d2nn_runtime::kernels::depthwise::Depthwise;
use d2nn_runtime::kernels::pool::{Pool2d, PoolAxis, PoolKind};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

pub fn usize_lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

pub fn f32_lit(v: f32) -> TokenStream {
    if v.is_nan() {
        quote!(f32::NAN)
    } else if v == f32::INFINITY {
        quote!(f32::INFINITY)
    } else if v == f32::NEG_INFINITY {
        quote!(f32::NEG_INFINITY)
    } else {
        let lit = Literal::f32_suffixed(v);
        quote!(#lit)
    }
}

pub fn f64_lit(v: f64) -> TokenStream {
    if v.is_nan() {
        quote!(f64::NAN)
    } else if v == f64::INFINITY {
        quote!(f64::INFINITY)
    } else if v == f64::NEG_INFINITY {
        quote!(f64::NEG_INFINITY)
    } else {
        let lit = Literal::f64_suffixed(v);
        quote!(#lit)
    }
}

/// `[a, b, …]` of usize literals.
pub fn usize_array(values: &[usize]) -> TokenStream {
    let v = values.iter().map(|&n| usize_lit(n));
    quote!([#(#v),*])
}

pub fn isize_array(values: &[isize]) -> TokenStream {
    let v = values.iter().map(|&n| Literal::isize_unsuffixed(n));
    quote!([#(#v),*])
}

pub fn i64_array(values: &[i64]) -> TokenStream {
    let v = values.iter().map(|&n| Literal::i64_unsuffixed(n));
    quote!([#(#v),*])
}

pub fn f64_vec(values: &[f64]) -> TokenStream {
    let v = values.iter().map(|&x| f64_lit(x));
    quote!(vec![#(#v),*])
}

fn pair((a, b): (usize, usize)) -> TokenStream {
    let (a, b) = (usize_lit(a), usize_lit(b));
    quote!((#a, #b))
}

pub fn conv2d(g: &Conv2d) -> TokenStream {
    let [c_in, h, w, c_out, oh, ow, kh, kw, group] = [g.c_in, g.h, g.w, g.c_out, g.oh, g.ow, g.kh, g.kw, g.group].map(usize_lit);
    let (stride, dilation, pad) = (pair(g.stride), pair(g.dilation), pair(g.pad));
    quote! {
        Conv2d { c_in: #c_in, h: #h, w: #w, c_out: #c_out, oh: #oh, ow: #ow, kh: #kh, kw: #kw,
                 stride: #stride, dilation: #dilation, pad: #pad, group: #group }
    }
}

pub fn conv_transpose2d(g: &d2nn_runtime::kernels::conv_transpose::ConvTranspose2d) -> TokenStream {
    let [c_in, h, w, c_out, oh, ow, kh, kw, group] = [g.c_in, g.h, g.w, g.c_out, g.oh, g.ow, g.kh, g.kw, g.group].map(usize_lit);
    let (stride, dilation, pad) = (pair(g.stride), pair(g.dilation), pair(g.pad));
    quote! {
        ConvTranspose2d { c_in: #c_in, h: #h, w: #w, c_out: #c_out, oh: #oh, ow: #ow, kh: #kh, kw: #kw,
                          stride: #stride, dilation: #dilation, pad: #pad, group: #group }
    }
}

pub fn depthwise(d: &Depthwise) -> TokenStream {
    let [channels, multiplier, h, w, oh, ow, kh, kw] = [d.channels, d.multiplier, d.h, d.w, d.oh, d.ow, d.kh, d.kw].map(usize_lit);
    let (stride, dilation, pad) = (pair(d.stride), pair(d.dilation), pair(d.pad));
    quote! {
        Depthwise { channels: #channels, multiplier: #multiplier, h: #h, w: #w, oh: #oh, ow: #ow, kh: #kh, kw: #kw,
                    stride: #stride, dilation: #dilation, pad: #pad }
    }
}

fn pool_axis(a: &PoolAxis) -> TokenStream {
    let [input, output, kernel, stride, dilation, pad_end] = [a.input, a.output, a.kernel, a.stride, a.dilation, a.pad_end].map(usize_lit);
    let pad_begin = Literal::i64_unsuffixed(a.pad_begin);
    quote! {
        PoolAxis { input: #input, output: #output, kernel: #kernel, stride: #stride, dilation: #dilation, pad_begin: #pad_begin, pad_end: #pad_end }
    }
}

pub fn pool2d(p: &Pool2d) -> TokenStream {
    let kind = match p.kind {
        PoolKind::Max => quote!(PoolKind::Max),
        PoolKind::Average { count_include_pad } => quote!(PoolKind::Average { count_include_pad: #count_include_pad }),
    };
    let (h, w) = (pool_axis(&p.h), pool_axis(&p.w));
    quote!(Pool2d { kind: #kind, h: #h, w: #w })
}

/// A value of one of the runtime's small op enums (`Unary`, `Binary`,
/// `Activation`, `ReduceKind`, `GlobalKind`) from its `Debug` text, which is
/// Rust syntax for them except for non-finite floats.
pub fn enum_value(path: &str, value: &impl std::fmt::Debug) -> TokenStream {
    let text = format!("{path}::{value:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_alphabetic() || c == '_' {
            let end = rest.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).unwrap_or(rest.len());
            let word = &rest[..end];
            match word {
                "inf" if out.ends_with('-') => {
                    out.pop();
                    out.push_str("f32::NEG_INFINITY");
                }
                "inf" => out.push_str("f32::INFINITY"),
                "NaN" => out.push_str("f32::NAN"),
                _ => out.push_str(word),
            }
            rest = &rest[end..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.parse().unwrap_or_else(|_| quote!(compile_error!("d2nnc: cannot express an op descriptor in Rust")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2nn_runtime::kernels::elementwise::Unary;

    #[test]
    fn enums_and_floats_become_rust() {
        assert_eq!(enum_value("Unary", &Unary::Clip { min: f32::NEG_INFINITY, max: 6.0 }).to_string(), "Unary :: Clip { min : f32 :: NEG_INFINITY , max : 6.0 }");
        assert_eq!(enum_value("Unary", &Unary::LeakyRelu { alpha: 1e-5 }).to_string(), "Unary :: LeakyRelu { alpha : 1e-5 }");
        assert_eq!(f32_lit(f32::NAN).to_string(), "f32 :: NAN");
        assert_eq!(f32_lit(0.1).to_string(), "0.1f32");
        assert_eq!(usize_array(&[1, 2]).to_string(), "[1 , 2]");
    }
}
