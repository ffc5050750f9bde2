module ssebench/goserver

go 1.19
