d2nn_macros::dynamic_net!(pub mod net = "model.onnx", threads(4));

fn main() {}
