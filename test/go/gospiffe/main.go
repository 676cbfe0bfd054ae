// Command gospiffe is an independent SPIFFE workload built on go-spiffe, the SPIFFE project's
// reference Go library, that the e2e tests run against Writ's agent and `writ proxy`. Each
// subcommand prints JSON on stdout (one object, or one per line for the long-running ones) that
// the Node test asserts on; errors are printed as {"error": "..."} with exit code 1.
//
//	gospiffe x509     -socket S [-rotate|-until-new-ca]  X509Source: the SVID and the own bundle; then waits for a rotated SVID, or one from a new CA
//	gospiffe bundles  -socket S                     FetchX509Bundles and FetchJWTBundles: the trust domains and their authorities
//	gospiffe jwt      -socket S -audience A         JWTSource.FetchJWTSVID: the token and its claims
//	gospiffe validate -socket S -audience A         the token on stdin through workloadapi.ValidateJWTSVID and jwtsvid.ParseAndValidate
//	gospiffe client   -socket S -authorize ID -url U [-http2]  an HTTPS GET with tlsconfig.MTLSClientConfig(AuthorizeID(ID))
//	gospiffe serve    -socket S -authorize ID -listen A  an HTTPS server with tlsconfig.MTLSServerConfig(AuthorizeID(ID))
//	gospiffe watch    -socket S                     workloadapi.WatchX509Context: one line per update, the SPIFFE IDs held (until killed)
package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// timeout bounds every one-shot command: how long a broken setup takes to fail, not a measurement.
const timeout = 60 * time.Second

var (
	outMu sync.Mutex
	out   = json.NewEncoder(os.Stdout)
)

// emit prints one JSON object on its own line.
func emit(v any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(v)
}

// fail prints {"error": ...} and exits 1.
func fail(err error) {
	emit(map[string]string{"error": err.Error()})
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gospiffe x509|bundles|jwt|validate|client|serve -socket PATH [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	socket := fs.String("socket", os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "the Workload API socket (a path or unix:// address)")
	audience := fs.String("audience", "", "JWT audience")
	authorize := fs.String("authorize", "", "the SPIFFE ID the TLS peer must have")
	url := fs.String("url", "", "the URL to GET")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	rotate := fs.Bool("rotate", false, "wait for the SVID to rotate and print it again")
	newCA := fs.Bool("until-new-ca", false, "print every update until the SVID chains to an authority the first bundle did not have")
	http2 := fs.Bool("http2", false, "client: offer h2 in ALPN (HTTP/2 when the server takes it)")
	_ = fs.Parse(os.Args[2:])
	addr := *socket
	if addr == "" {
		fail(errors.New("-socket is required"))
	}
	if !strings.Contains(addr, "://") {
		addr = "unix://" + addr
	}
	client := workloadapi.WithClientOptions(workloadapi.WithAddr(addr), workloadapi.WithLogger(jsonLogger{}))

	switch cmd {
	case "x509":
		x509Cmd(client, *rotate, *newCA)
	case "bundles":
		bundlesCmd(addr)
	case "jwt":
		jwtCmd(client, *audience)
	case "validate":
		validateCmd(addr, client, *audience)
	case "client":
		clientCmd(client, mustID(*authorize), *url, *http2)
	case "serve":
		serveCmd(client, mustID(*authorize), *listen)
	case "watch":
		watchCmd(addr)
	default:
		fail(fmt.Errorf("unknown command %q", cmd))
	}
}

func mustID(s string) spiffeid.ID {
	id, err := spiffeid.FromString(s)
	if err != nil {
		fail(fmt.Errorf("-authorize: %w", err))
	}
	return id
}

func oneShot() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	_ = cancel // the process exits when the command is done
	return ctx
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func fingerprints(cs []*x509.Certificate) []string {
	fps := make([]string, 0, len(cs))
	for _, c := range cs {
		fps = append(fps, fingerprint(c))
	}
	sort.Strings(fps)
	return fps
}

type svidInfo struct {
	SpiffeID         string   `json:"spiffeId"`
	Serial           string   `json:"serial"`
	NotAfter         string   `json:"notAfter"`
	DNSNames         []string `json:"dnsNames"`
	Chain            int      `json:"chain"`
	KeyFingerprint   string   `json:"keyFingerprint"`
	BundleTD         string   `json:"bundleTrustDomain"`
	BundleAuthority  []string `json:"bundleAuthorities"`
	ChainVerifiesOwn bool     `json:"chainVerifies"`
	// Root is the bundle authority the SVID's verified chain ends at.
	Root string `json:"root"`
}

// describe reports the source's current SVID and its own trust domain's bundle, and whether the
// SVID verifies against that bundle by go-spiffe's own x509svid.Verify.
func describe(src *workloadapi.X509Source) svidInfo {
	svid, err := src.GetX509SVID()
	if err != nil {
		fail(err)
	}
	leaf := svid.Certificates[0]
	pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		fail(err)
	}
	pubSum := sha256.Sum256(pub)
	info := svidInfo{
		SpiffeID:       svid.ID.String(),
		Serial:         leaf.SerialNumber.Text(16),
		NotAfter:       leaf.NotAfter.UTC().Format(time.RFC3339),
		DNSNames:       append([]string{}, leaf.DNSNames...),
		Chain:          len(svid.Certificates),
		KeyFingerprint: hex.EncodeToString(pubSum[:]),
	}
	bundle, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		fail(err)
	}
	info.BundleTD = bundle.TrustDomain().IDString()
	info.BundleAuthority = fingerprints(bundle.X509Authorities())
	_, chains, err := x509svid.Verify(svid.Certificates, src)
	info.ChainVerifiesOwn = err == nil
	if err == nil && len(chains) > 0 {
		info.Root = fingerprint(chains[0][len(chains[0])-1])
	}
	return info
}

func x509Cmd(client workloadapi.SourceOption, rotate, newCA bool) {
	ctx := oneShot()
	if newCA {
		// A CA rotation takes longer than one SVID: bounded by the caller's CA lifetime instead.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*timeout)
		defer cancel()
	}
	src, err := workloadapi.NewX509Source(ctx, client)
	if err != nil {
		fail(err)
	}
	defer src.Close()
	first := describe(src)
	emit(map[string]any{"event": "svid", "svid": first})
	if !rotate && !newCA {
		return
	}
	known := map[string]bool{}
	for _, fp := range first.BundleAuthority {
		known[fp] = true
	}
	last := first
	// The source's Updated channel fires on every Workload API update; a rotation is a new serial.
	for {
		select {
		case <-src.Updated():
			now := describe(src)
			switch {
			case rotate && now.Serial != first.Serial:
				emit(map[string]any{"event": "rotated", "svid": now})
				return
			case newCA && now.Root != "" && !known[now.Root]:
				emit(map[string]any{"event": "ca-rotated", "svid": now})
				return
			case newCA && (now.Serial != last.Serial || strings.Join(now.BundleAuthority, ",") != strings.Join(last.BundleAuthority, ",")):
				emit(map[string]any{"event": "update", "svid": now})
			}
			last = now
		case <-ctx.Done():
			fail(fmt.Errorf("no rotated SVID: %w", ctx.Err()))
		}
	}
}

type bundleInfo struct {
	TrustDomain string   `json:"trustDomain"`
	Authorities []string `json:"authorities"`
}

type jwtBundleInfo struct {
	TrustDomain string   `json:"trustDomain"`
	KeyIDs      []string `json:"keyIds"`
}

func bundlesCmd(addr string) {
	ctx := oneShot()
	x5, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		fail(err)
	}
	jw, err := workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		fail(err)
	}
	x509s := []bundleInfo{}
	for _, b := range x5.Bundles() { // sorted by trust domain
		x509s = append(x509s, bundleInfo{TrustDomain: b.TrustDomain().Name(), Authorities: fingerprints(b.X509Authorities())})
	}
	jwts := []jwtBundleInfo{}
	for _, b := range jw.Bundles() {
		ids := []string{}
		for kid := range b.JWTAuthorities() {
			ids = append(ids, kid)
		}
		sort.Strings(ids)
		jwts = append(jwts, jwtBundleInfo{TrustDomain: b.TrustDomain().Name(), KeyIDs: ids})
	}
	emit(map[string]any{"x509": x509s, "jwt": jwts})
}

func jwtCmd(client workloadapi.SourceOption, audience string) {
	ctx := oneShot()
	src, err := workloadapi.NewJWTSource(ctx, client)
	if err != nil {
		fail(err)
	}
	defer src.Close()
	svid, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		fail(err)
	}
	emit(map[string]any{
		"spiffeId": svid.ID.String(),
		"audience": svid.Audience,
		"expiry":   svid.Expiry.UTC().Format(time.RFC3339),
		"token":    svid.Marshal(),
	})
}

type validation struct {
	SpiffeID string   `json:"spiffeId,omitempty"`
	Audience []string `json:"audience,omitempty"`
	Error    string   `json:"error,omitempty"`
}

func validationOf(svid *jwtsvid.SVID, err error) validation {
	if err != nil {
		return validation{Error: err.Error()}
	}
	return validation{SpiffeID: svid.ID.String(), Audience: svid.Audience}
}

// validateCmd checks the token on stdin twice: by the agent (ValidateJWTSVID RPC) and locally
// against the JWT bundles the JWTSource received (jwtsvid.ParseAndValidate).
func validateCmd(addr string, client workloadapi.SourceOption, audience string) {
	raw, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		fail(err)
	}
	token := strings.TrimSpace(string(raw))
	ctx := oneShot()
	byAgent := validationOf(workloadapi.ValidateJWTSVID(ctx, token, audience, workloadapi.WithAddr(addr)))
	src, err := workloadapi.NewJWTSource(ctx, client)
	if err != nil {
		fail(err)
	}
	defer src.Close()
	local := validationOf(jwtsvid.ParseAndValidate(token, src, []string{audience}))
	emit(map[string]any{"workloadApi": byAgent, "local": local})
}

// peerID is the SPIFFE ID in the TLS peer's leaf certificate.
func peerID(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return ""
	}
	return id.String()
}

func clientCmd(client workloadapi.SourceOption, allowed spiffeid.ID, url string, http2 bool) {
	ctx := oneShot()
	src, err := workloadapi.NewX509Source(ctx, client)
	if err != nil {
		fail(err)
	}
	defer src.Close()
	transport := &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(allowed)), ForceAttemptHTTP2: http2}
	hc := &http.Client{Transport: transport}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fail(err)
	}
	res, err := hc.Do(req)
	if err != nil {
		fail(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		fail(err)
	}
	var parsed any
	if json.Unmarshal(body, &parsed) != nil {
		parsed = string(body)
	}
	emit(map[string]any{"status": res.StatusCode, "body": parsed, "peer": peerID(res.TLS.PeerCertificates), "proto": res.Proto})
}

// jsonLogger prints go-spiffe's warnings and errors (a refused or failed Workload API watch, which
// the sources retry) as JSON lines, so a test can see that a source is waiting and why.
type jsonLogger struct{}

func (jsonLogger) Debugf(string, ...any) {}
func (jsonLogger) Infof(string, ...any)  {}
func (jsonLogger) Warnf(format string, args ...any) {
	emit(map[string]string{"event": "workloadapi-warning", "error": fmt.Sprintf(format, args...)})
}
func (jsonLogger) Errorf(format string, args ...any) {
	emit(map[string]string{"event": "workloadapi-error", "error": fmt.Sprintf(format, args...)})
}

// lineLog turns the http.Server's error log (TLS handshake errors among them) into JSON lines.
type lineLog struct{}

func (lineLog) Write(p []byte) (int, error) {
	emit(map[string]string{"event": "server-error", "error": strings.TrimSpace(string(p))})
	return len(p), nil
}

func serveCmd(client workloadapi.SourceOption, allowed spiffeid.ID, listen string) {
	src, err := workloadapi.NewX509Source(oneShot(), client)
	if err != nil {
		fail(err)
	}
	defer src.Close()
	self, err := src.GetX509SVID()
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fail(err)
	}
	srv := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(allowed)),
		ErrorLog:  log.New(lineLog{}, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer := peerID(r.TLS.PeerCertificates)
			emit(map[string]string{"event": "request", "peer": peer, "method": r.Method, "path": r.URL.Path})
			w.Header().Set("content-type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"server": self.ID.String(), "peer": peer, "method": r.Method, "path": r.URL.Path})
		}),
	}
	emit(map[string]string{"event": "listening", "addr": ln.Addr().String(), "spiffeId": self.ID.String()})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fail(err)
	}
}

// Interface checks: the sources are what tlsconfig and jwtsvid take.
var (
	_ x509bundle.Source = (*workloadapi.X509Source)(nil)
	_ jwtbundle.Source  = (*workloadapi.JWTSource)(nil)
)

// idWatcher prints the SPIFFE IDs of every X.509 context the Workload API streams.
type idWatcher struct{}

func (idWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	ids := make([]string, 0, len(c.SVIDs))
	for _, s := range c.SVIDs {
		ids = append(ids, s.ID.String())
	}
	sort.Strings(ids)
	emit(map[string]any{"event": "update", "ids": ids})
}

func (idWatcher) OnX509ContextWatchError(err error) {
	// "no identity issued" while nothing is registered yet: the stream goes on.
	emit(map[string]string{"event": "watch-error", "error": err.Error()})
}

func watchCmd(addr string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	emit(map[string]string{"event": "watching"})
	err := workloadapi.WatchX509Context(ctx, idWatcher{}, workloadapi.WithAddr(addr))
	if err != nil && !errors.Is(err, context.Canceled) {
		fail(err)
	}
}
