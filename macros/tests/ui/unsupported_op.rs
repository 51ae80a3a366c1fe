// trybuild builds this file in target/tests/trybuild/d2nn-macros, four levels below the repository.
d2nn_macros::dynamic_net!(pub mod net = "../../../../macros/tests/ui/unsupported_op.onnx");

fn main() {}
