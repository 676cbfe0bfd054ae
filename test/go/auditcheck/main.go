// Command auditcheck is the independent verifier of Writ's audit log: it answers, for each case
// it reads as JSON on stdin, whether transparency-dev/merkle (RFC 6962 hasher) accepts an
// inclusion or consistency proof and whether golang.org/x/mod/sumdb/note opens a signed note
// with a given verifier key. `auditcheck genkey NAME` prints a key pair made by note.GenerateKey,
// and `auditcheck sign` signs {"skey","text"} from stdin with note.Sign.
package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// A case: hashes are base64 (encoding/json's []byte form).
type testCase struct {
	Kind     string   `json:"kind"` // inclusion | consistency | note
	Index    uint64   `json:"index"`
	Size     uint64   `json:"size"`
	LeafHash []byte   `json:"leafHash"`
	Root     []byte   `json:"root"`
	Size1    uint64   `json:"size1"`
	Size2    uint64   `json:"size2"`
	Root1    []byte   `json:"root1"`
	Root2    []byte   `json:"root2"`
	Proof    [][]byte `json:"proof"`
	Note     string   `json:"note"`
	Vkey     string   `json:"vkey"`
}

type result struct {
	OK    bool     `json:"ok"`
	Error string   `json:"error,omitempty"`
	Text  string   `json:"text,omitempty"`
	Sigs  []string `json:"sigs,omitempty"`
}

func check(c testCase) result {
	var err error
	switch c.Kind {
	case "inclusion":
		err = proof.VerifyInclusion(rfc6962.DefaultHasher, c.Index, c.Size, c.LeafHash, c.Proof, c.Root)
	case "consistency":
		err = proof.VerifyConsistency(rfc6962.DefaultHasher, c.Size1, c.Size2, c.Proof, c.Root1, c.Root2)
	case "note":
		var v note.Verifier
		v, err = note.NewVerifier(c.Vkey)
		if err == nil {
			var n *note.Note
			n, err = note.Open([]byte(c.Note), note.VerifierList(v))
			if err == nil {
				r := result{OK: true, Text: n.Text}
				for _, s := range n.Sigs {
					r.Sigs = append(r.Sigs, s.Name)
				}
				return r
			}
		}
	default:
		err = fmt.Errorf("unknown case kind %q", c.Kind)
	}
	if err != nil {
		return result{OK: false, Error: err.Error()}
	}
	return result{OK: true}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "auditcheck:", err)
	os.Exit(1)
}

func main() {
	enc := json.NewEncoder(os.Stdout)
	if len(os.Args) == 3 && os.Args[1] == "genkey" {
		skey, vkey, err := note.GenerateKey(rand.Reader, os.Args[2])
		if err != nil {
			fail(err)
		}
		_ = enc.Encode(map[string]string{"skey": skey, "vkey": vkey})
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "sign" {
		var in struct {
			Skey string `json:"skey"`
			Text string `json:"text"`
		}
		if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
			fail(err)
		}
		s, err := note.NewSigner(in.Skey)
		if err != nil {
			fail(err)
		}
		msg, err := note.Sign(&note.Note{Text: in.Text}, s)
		if err != nil {
			fail(err)
		}
		_ = enc.Encode(map[string]string{"note": string(msg)})
		return
	}
	if len(os.Args) != 1 {
		fail(fmt.Errorf("usage: auditcheck < cases.json | auditcheck genkey NAME | auditcheck sign < {skey,text}"))
	}
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fail(err)
	}
	out := make([]result, 0, len(cases))
	for _, c := range cases {
		out = append(out, check(c))
	}
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}
