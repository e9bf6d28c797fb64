fn main() { println!("perturb: command line being written"); }
