fn main() {
    // Passes ESP-IDF's link arguments and configuration to rustc.
    embuild::espidf::sysenv::output();
}
