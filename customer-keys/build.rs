fn main() {
    // The migrations are embedded at compile time: rebuild when one changes or is added.
    println!("cargo:rerun-if-changed=migrations");
}
