#!/usr/bin/env node
// npm puts this on PATH (npx flysim); it only hands over to Deno.
import { launch } from "./launch.mjs";
launch("flysim.ts");
