int main() { return 1; }  // replaced by the doctl implementation
