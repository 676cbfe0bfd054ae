// Command brokerload is the broker benchmark's load generator for the agent socket: an independent
// gRPC client (grpc-go, in a process of its own, so the bench's own GC and event loop stay out of
// the numbers) that sends calls one at a time and prints one JSON line with exact percentiles (all
// latencies kept and sorted, not estimated).
//
//	brokerload -socket S -method exchange -audience A -scope orders:read [-fresh] -calls 20000
//	brokerload -socket S -method jwtsvid  -audience A -calls 20000
//
// exchange: writ.broker.v1.TokenBroker/Exchange; with -fresh every call asks another scope
// (-scope followed by a number), so the agent must ask the server; without it every answer must
// come from the agent's cache. jwtsvid: SpiffeWorkloadAPI/FetchJWTSVID, the baseline. Every call
// carries the metadata workload.spiffe.io: true, as the Workload API requires.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// raw passes encoded messages through unchanged: the requests are built with protowire, so no
// generated code (and no copy of Writ's .proto) is needed.
type raw struct{}

func (raw) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

func str(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// exchangeAnswer reads ExchangeResponse: token (1) and cached (5).
func exchangeAnswer(b []byte) (token string, cached bool, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeString(b)
			if m < 0 {
				return "", false, protowire.ParseError(m)
			}
			token, b = v, b[m:]
		case num == 5 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return "", false, protowire.ParseError(m)
			}
			cached, b = v != 0, b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return "", false, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return token, cached, nil
}

type result struct {
	Method  string  `json:"method"`
	Fresh   bool    `json:"fresh"`
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
	P999    float64 `json:"p999"`
	Max     float64 `json:"max"`
}

// pct is the exact p-th percentile of sorted latencies, in ms (nearest rank).
func pct(sorted []time.Duration, p float64) float64 {
	i := int(p / 100 * float64(len(sorted)))
	i = min(i, len(sorted)-1)
	return float64(sorted[i].Nanoseconds()) / 1e6
}

func run() error {
	socket := flag.String("socket", "", "the agent's Workload API socket (a path)")
	method := flag.String("method", "exchange", "exchange or jwtsvid")
	audience := flag.String("audience", "", "the audience")
	scope := flag.String("scope", "", "exchange: the scope (with -fresh, the prefix of a new scope per call)")
	fresh := flag.Bool("fresh", false, "exchange: a new scope per call, so that the agent asks the server")
	calls := flag.Int("calls", 20000, "measured calls, one at a time")
	warmup := flag.Int("warmup", 500, "calls before the measured ones")
	flag.Parse()
	if *socket == "" || *audience == "" || (*method == "exchange" && *scope == "") {
		return errors.New("-socket, -audience and (for exchange) -scope are required")
	}
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(*socket, "unix://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true")
	// Every fresh run names its scopes after its own start, so runs never hit each other's cache.
	prefix := fmt.Sprintf("%s%d-", *scope, time.Now().UnixNano())
	call := func(i int) error {
		var req, resp []byte
		switch *method {
		case "exchange":
			req = str(nil, 1, *audience)
			if *fresh {
				req = str(req, 2, fmt.Sprintf("%s%d", prefix, i))
			} else {
				req = str(req, 2, *scope)
			}
			if err := conn.Invoke(ctx, "/writ.broker.v1.TokenBroker/Exchange", &req, &resp); err != nil {
				return err
			}
			token, cached, err := exchangeAnswer(resp)
			if err != nil {
				return err
			}
			if token == "" || cached == *fresh {
				return fmt.Errorf("call %d: token %d bytes, cached %v (expected %v)", i, len(token), cached, !*fresh)
			}
		case "jwtsvid":
			req = str(nil, 1, *audience)
			if err := conn.Invoke(ctx, "/SpiffeWorkloadAPI/FetchJWTSVID", &req, &resp); err != nil {
				return err
			}
			if len(resp) == 0 {
				return errors.New("no JWT-SVID")
			}
		default:
			return fmt.Errorf("unknown -method %q", *method)
		}
		return nil
	}
	for i := 0; i < *warmup; i++ {
		if err := call(-1 - i); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, *calls)
	start := time.Now()
	for i := range lat {
		t := time.Now()
		if err := call(i); err != nil {
			return err
		}
		lat[i] = time.Since(t)
	}
	secs := time.Since(start).Seconds()
	slices.Sort(lat)
	return json.NewEncoder(os.Stdout).Encode(result{
		Method: *method, Fresh: *fresh, Calls: *calls, Seconds: secs, Rate: float64(*calls) / secs,
		P50: pct(lat, 50), P90: pct(lat, 90), P99: pct(lat, 99), P999: pct(lat, 99.9), Max: pct(lat, 100),
	})
}

func main() {
	if err := run(); err != nil {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"error": err.Error()})
		os.Exit(1)
	}
}
