d2nn_macros::dynamic_net!(pub mod net = "no/such/model.onnx");

fn main() {}
