fn main() {
    std::process::exit(xen_vif::main_entry());
}
