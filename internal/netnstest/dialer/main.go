// Command dialer opens one TCP connection, optionally from a given source
// address, prints "connected", then relays stdin to the connection and the
// connection to stdout. The integration tests run it as another user
// (setpriv) to see what the firewall lets that user's sockets do.
//
//	dialer [-from ADDR] HOST:PORT
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	from := flag.String("from", "", "source address")
	flag.Parse()
	d := net.Dialer{Timeout: 10 * time.Second}
	if *from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(*from)}
	}
	c, err := d.Dial("tcp", flag.Arg(0))
	if err != nil {
		fmt.Println("failed:", err)
		os.Exit(7)
	}
	fmt.Println("connected")
	go func() { _, _ = io.Copy(c, os.Stdin) }()
	_, _ = io.Copy(os.Stdout, c)
}
