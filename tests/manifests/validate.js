#!/usr/bin/env node
// Validates every YAML document of the given files and folders (recursively) against the OpenAPI
// schema of its kind: Kubernetes' own kinds (kubernetes-models) and the CRDs gpushare's manifests use
// (Prometheus operator, cert-manager). A document of a kind no schema knows fails, naming its file.
// Each kustomization.yaml is built with `kubectl kustomize` (when kubectl exists) and its output is
// validated too, so the overlays' namespace and image edits are checked as well.
//
// usage: node validate.js PATH...     exit status: 0 all valid, 1 something invalid, 2 bad usage
"use strict";

const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");
const yaml = require("js-yaml");

// apiVersion group -> the package whose folders are named after it.
const crdPackages = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "cert-manager.io": "@kubernetes-models/cert-manager",
  "acme.cert-manager.io": "@kubernetes-models/cert-manager",
};

// The model class of apiVersion + kind, or null when no package has one.
function modelOf(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9]+$/.test(kind)) return null;
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  if (!/^[a-z0-9.-]*$/.test(group) || !/^v[0-9a-z]+$/.test(version)) return null;
  const modulePath = group === "" ? `kubernetes-models/${version}/${kind}`
    : crdPackages[group] ? `${crdPackages[group]}/${group}/${version}/${kind}`
    : `kubernetes-models/${group}/${version}/${kind}`;
  let loaded;
  try {
    loaded = require(modulePath);
  } catch (error) {
    if (error.code === "MODULE_NOT_FOUND" || error.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return null;
    throw error;
  }
  const model = loaded[kind];
  return typeof model === "function" && model.kind === kind && model.apiVersion === apiVersion ? model : null;
}

// Problems of one document ([] when valid); `where` names it in messages.
function checkDocument(document, where) {
  if (document === null || document === undefined) return [];  // an empty document between two ---
  if (typeof document !== "object" || Array.isArray(document)) return [`${where}: not a mapping`];
  const { apiVersion, kind } = document;
  if (kind === "Kustomization" && typeof apiVersion === "string" && apiVersion.startsWith("kustomize.config.k8s.io/")) {
    return [];  // checked by `kubectl kustomize` on its folder
  }
  const model = modelOf(apiVersion, kind);
  if (!model) return [`${where}: unknown kind ${kind} (apiVersion ${apiVersion}): no schema for it`];
  const problems = [];
  const name = document.metadata && document.metadata.name;
  if (typeof name !== "string" || name === "") problems.push(`${where}: ${kind} without metadata.name`);
  try {
    new model(document).validate();
  } catch (error) {
    problems.push(`${where}: ${kind} ${name}: ${error.message}`);
  }
  return problems;
}

function checkYamlText(text, label) {
  let documents;
  try {
    documents = yaml.loadAll(text);
  } catch (error) {
    return { count: 0, problems: [`${label}: not YAML: ${error.message}`] };
  }
  const problems = [];
  documents.forEach((document, index) => problems.push(...checkDocument(document, `${label} (document ${index + 1})`)));
  return { count: documents.filter((d) => d !== null && d !== undefined).length, problems };
}

function kubectlExists() {
  return spawnSync("kubectl", ["version", "--client"], { stdio: "ignore" }).status === 0;
}

// The output of `kubectl kustomize DIR`, checked like a file.
function checkKustomization(directory) {
  const built = spawnSync("kubectl", ["kustomize", directory], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (built.status !== 0) {
    return { count: 0, problems: [`${directory}/kustomization.yaml: kubectl kustomize failed: ${built.stderr.trim()}`] };
  }
  return checkYamlText(built.stdout, `kubectl kustomize ${directory}`);
}

function yamlFilesUnder(target) {
  const info = fs.statSync(target);
  if (info.isFile()) return [target];
  const files = [];
  for (const entry of fs.readdirSync(target, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const full = path.join(target, entry.name);
    if (entry.isDirectory()) files.push(...yamlFilesUnder(full));
    else if (/\.ya?ml$/.test(entry.name)) files.push(full);
  }
  return files;
}

function main(targets) {
  if (targets.length === 0) {
    console.error("usage: validate.js PATH...  (YAML files or folders holding them)");
    return 2;
  }
  const files = [];
  for (const target of targets) {
    if (!fs.existsSync(target)) {
      console.error(`validate.js: no such file or folder: ${target}`);
      return 2;
    }
    files.push(...yamlFilesUnder(target));
  }
  const withKubectl = kubectlExists();
  const problems = [];
  let documents = 0;
  for (const file of files) {
    const result = checkYamlText(fs.readFileSync(file, "utf8"), file);
    documents += result.count;
    problems.push(...result.problems);
    if (path.basename(file) === "kustomization.yaml") {
      if (withKubectl) {
        const built = checkKustomization(path.dirname(file));
        documents += built.count;
        problems.push(...built.problems);
      } else {
        console.log(`skipped: ${file} (kubectl is not installed; kubectl kustomize checks it)`);
      }
    }
  }
  for (const problem of problems) console.error(`INVALID ${problem}`);
  console.log(`${files.length} files, ${documents} documents, ${problems.length} problems`);
  return problems.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
