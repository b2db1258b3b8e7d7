// Sends HL7 fixtures to an MLLP listener with node-hl7-client (an MLLP client
// written by others, pinned in package-lock.json) and checks each ACK's MSA-1
// (and, for the bad one, that ERR names PID-3).
//
//   node send_fixtures.js <port> <fixtures dir>
//
// Exits 0 when every ACK is as expected, 1 otherwise.
'use strict';

const fs = require('fs');
const path = require('path');
const { Client, Message } = require('node-hl7-client');

const port = Number(process.argv[2]);
const fixtures = process.argv[3];
if (!port || !fixtures) {
  console.error('usage: node send_fixtures.js <port> <fixtures dir>');
  process.exit(2);
}

function load(name) {
  // Fixtures are kept with LF line ends; HL7 segments end with CR.
  return fs.readFileSync(path.join(fixtures, name), 'utf8').replace(/\r?\n/g, '\r');
}

const cases = [
  { name: 'A01 admit', text: load('a01_admit.hl7'), msa1: 'AA', msa2: 'A01-0001' },
  { name: 'A02 transfer', text: load('a02_transfer.hl7'), msa1: 'AA', msa2: 'A02-0001' },
  { name: 'A03 discharge', text: load('a03_discharge.hl7'), msa1: 'AA', msa2: 'A03-0001' },
  {
    name: 'A02 with an invalid NHS number',
    text: load('a02_transfer.hl7').replace('9990000026', '9990000019').replace('A02-0001', 'A02-BAD1'),
    msa1: 'AE',
    msa2: 'A02-BAD1',
    errField: 'PID',
    errPosition: '3',
  },
  { name: 'A01 resent', text: load('a01_admit.hl7'), msa1: 'AA', msa2: 'A01-0001' },
];

let failures = 0;
let index = 0;
let waiting = null;

const overall = setTimeout(() => {
  console.error('FAIL: timed out waiting for ACKs');
  process.exit(1);
}, 30000);

const client = new Client({ host: '127.0.0.1' });
const connection = client.createConnection(
  { port, waitAck: true, maxConnectionAttempts: 5, retryLow: 200, retryHigh: 1000 },
  async (res) => {
    const ack = res.getMessage();
    if (waiting) {
      const done = waiting;
      waiting = null;
      done(ack);
    }
  },
);

function check(c, ack) {
  const msa1 = ack.get('MSA.1').toString();
  const msa2 = ack.get('MSA.2').toString();
  const problems = [];
  if (msa1 !== c.msa1) problems.push(`MSA-1 ${msa1}, expected ${c.msa1}`);
  if (msa2 !== c.msa2) problems.push(`MSA-2 ${msa2}, expected ${c.msa2}`);
  if (ack.get('MSH.9.1').toString() !== 'ACK') problems.push('MSH-9 is not ACK');
  if (c.errField) {
    const seg = ack.get('ERR.2.1').toString();
    const pos = ack.get('ERR.2.3').toString();
    if (seg !== c.errField || pos !== c.errPosition) {
      problems.push(`ERR-2 ${seg}^..^${pos}, expected ${c.errField}-${c.errPosition}`);
    }
    console.log(`    ERR-8: ${ack.get('ERR.8').toString()}`);
  }
  if (problems.length) {
    failures++;
    console.log(`FAIL ${c.name}: ${problems.join('; ')}`);
  } else {
    console.log(`ok   ${c.name}: ${msa1}`);
  }
}

function sendNext() {
  if (index >= cases.length) {
    clearTimeout(overall);
    connection.close().finally(() => {
      console.log(`${cases.length - failures} passed, ${failures} failed`);
      process.exit(failures === 0 ? 0 : 1);
    });
    return;
  }
  const c = cases[index++];
  waiting = (ack) => {
    check(c, ack);
    setImmediate(sendNext);
  };
  connection.sendMessage(new Message({ text: c.text })).catch((err) => {
    console.error(`FAIL ${c.name}: send failed: ${err}`);
    process.exit(1);
  });
}

connection.on('connect', () => sendNext());
connection.on('client.error', (err) => console.error(`client error: ${err}`));
