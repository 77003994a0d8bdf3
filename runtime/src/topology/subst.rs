pub fn substitute() {}
