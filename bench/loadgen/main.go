// Command loadgen is the traffic of the throughput benchmark
// (bench/throughput_bench_test.go). The benchmark runs it in the relay
// namespace as the tor instance's User, so its sockets are the ones the
// firewall's exit class applies to: a process of its own, because a uid
// belongs to a whole process, not to one goroutine of the benchmark.
//
//	loadgen probe ADDR:PORT
//	loadgen bulk ADDR:PORT SECONDS
//	loadgen flows -n N -concurrency C -seconds S DESTINATIONS-FILE
//
// probe opens one connection and prints "connected" or "refused". bulk
// sends for SECONDS, then waits for the receiver to close (it has read
// everything), and prints {"bytes","seconds","cpu"}. flows opens N
// connections to the ADDR:PORT lines of the file in turn, C at a time,
// prints {"established","seconds","cpu"}; on the line "exchange" on its
// standard input it sends small requests and reads their echo over all
// flows for S seconds and prints {"exchanges","seconds","cpu"}; on the
// line "close" it closes them all with a reset and prints {"closed"}.
// "cpu" is the processor time loadgen has used so far, in seconds. Any
// failure ends it with a message on the standard error and exit status 1.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// exchangeSize is one request, and its echo: a small exchange as an
// interactive stream has.
const exchangeSize = 64

// dialTimeout bounds every connect: a connect that would hang is a
// failure of the benchmark, not a slow round.
const dialTimeout = 10 * time.Second

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: loadgen probe|bulk|flows ARGS"))
	}
	var err error
	switch os.Args[1] {
	case "probe":
		err = probe(os.Args[2:])
	case "bulk":
		err = bulk(os.Args[2:])
	case "flows":
		err = flows(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

// cpuSeconds is the processor time this process has used so far, user
// and system: the benchmark weighs the work, not only the rate, which
// the rest of a busy host's load moves.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fail(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}

func emit(v any) {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		fail(err)
	}
}

func probe(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: loadgen probe ADDR:PORT")
	}
	c, err := net.DialTimeout("tcp", args[0], dialTimeout)
	switch {
	case err == nil:
		c.Close()
		fmt.Println("connected")
	case errors.Is(err, syscall.ECONNREFUSED):
		fmt.Println("refused")
	default:
		return err
	}
	return nil
}

func bulk(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: loadgen bulk ADDR:PORT SECONDS")
	}
	seconds, err := strconv.ParseFloat(args[1], 64)
	if err != nil || seconds <= 0 {
		return fmt.Errorf("SECONDS %q: want a positive number", args[1])
	}
	start := time.Now()
	c, err := net.DialTimeout("tcp", args[0], dialTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	var sent int64
	end := start.Add(time.Duration(seconds * float64(time.Second)))
	for time.Now().Before(end) {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	// The receiver closes once it has read everything: the time counts
	// the bytes delivered, not the ones left in a buffer.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("waiting for the receiver: %w", err)
	}
	emit(map[string]any{"bytes": sent, "seconds": time.Since(start).Seconds(), "cpu": cpuSeconds()})
	return nil
}

func flows(args []string) error {
	fs := flag.NewFlagSet("flows", flag.ContinueOnError)
	n := fs.Int("n", 10000, "connections")
	concurrency := fs.Int("concurrency", 64, "connects and exchanges in flight")
	seconds := fs.Float64("seconds", 3, "duration of the exchanges")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *n < 1 || *concurrency < 1 || *seconds <= 0 {
		return errors.New("usage: loadgen flows -n N -concurrency C -seconds S DESTINATIONS-FILE")
	}
	dests, err := readDestinations(fs.Arg(0))
	if err != nil {
		return err
	}
	conns, took, err := open(*n, *concurrency, dests)
	if err != nil {
		return err
	}
	emit(map[string]any{"established": len(conns), "seconds": took.Seconds(), "cpu": cpuSeconds()})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "exchange":
			done, took, err := exchange(conns, *concurrency, time.Duration(*seconds*float64(time.Second)))
			if err != nil {
				return err
			}
			emit(map[string]any{"exchanges": done, "seconds": took.Seconds(), "cpu": cpuSeconds()})
		case "close":
			for _, c := range conns {
				_ = c.SetLinger(0) // a reset: no TIME_WAIT left for the next round
				c.Close()
			}
			emit(map[string]any{"closed": len(conns)})
			return nil
		default:
			return fmt.Errorf("unknown command %q", in.Text())
		}
	}
	return errors.New("standard input ended before close")
}

// readDestinations reads ADDR:PORT lines.
func readDestinations(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	dests := strings.Fields(string(data))
	if len(dests) == 0 {
		return nil, fmt.Errorf("%s: no destinations", file)
	}
	return dests, nil
}

// open opens n connections, the i-th to dests[i%len(dests)], concurrency
// at a time, and returns them and how long opening them all took.
func open(n, concurrency int, dests []string) ([]*net.TCPConn, time.Duration, error) {
	conns := make([]*net.TCPConn, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: dialTimeout}
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := d.Dial("tcp", dests[i%len(dests)])
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("connection %d to %s: %w", i, dests[i%len(dests)], err) })
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c.(*net.TCPConn)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, 0, firstErr
	}
	return conns, took, nil
}

// exchange sends a request and reads its echo on the flows in turn,
// concurrency workers each taking every concurrency-th flow round-robin,
// until the duration has passed; it returns the exchanges done and the
// time they took. Every flow must have had an exchange: the rate is one of
// all flows, not of the first few.
func exchange(conns []*net.TCPConn, concurrency int, duration time.Duration) (int64, time.Duration, error) {
	concurrency = min(concurrency, len(conns))
	var total atomic.Int64
	errs := make([]error, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(duration)
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := make([]byte, exchangeSize), make([]byte, exchangeSize)
			var mine []*net.TCPConn
			for i := w; i < len(conns); i += concurrency {
				mine = append(mine, conns[i])
			}
			var done int64
			for k := 0; ; k++ {
				if k >= len(mine) && !time.Now().Before(end) {
					break // every flow of this worker had one
				}
				c := mine[k%len(mine)]
				req[0] = byte(k)
				_ = c.SetDeadline(time.Now().Add(dialTimeout))
				if _, err := c.Write(req); err != nil {
					errs[w] = fmt.Errorf("request: %w", err)
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errs[w] = fmt.Errorf("echo: %w", err)
					return
				}
				if resp[0] != req[0] {
					errs[w] = errors.New("echo differs from the request")
					return
				}
				done++
			}
			total.Add(done)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	return total.Load(), took, nil
}
