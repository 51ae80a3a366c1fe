// trybuild builds this file in target/tests/trybuild/d2nn-macros, four levels below the repository.
d2nn_macros::dynamic_net!(pub mod net = "../../../../tests/fixtures/early_exit_where/model.onnx", fix(treshold = 0.5));

fn main() {}
