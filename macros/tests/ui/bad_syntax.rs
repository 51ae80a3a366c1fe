d2nn_macros::dynamic_net!(pub net = "model.onnx");

fn main() {}
