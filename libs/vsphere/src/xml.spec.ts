import { describe, expect, it } from 'vitest';
import { asArray, decodeValue, envelope, escapeXml, kid, moRef, parseXml, serialize, type VimObject } from './xml';

describe('request XML', () => {
  it('escapes text and attribute values', () => {
    expect(escapeXml(`a<b>&"c'\n`)).toBe('a&lt;b&gt;&amp;&quot;c&apos;&#xA;');
    expect(serialize('name', 'x</name><evil/>')).toBe('<name>x&lt;/name&gt;&lt;evil/&gt;</name>');
    expect(serialize('obj', moRef('Virtual"Machine', 'vm-<1>'))).toBe('<obj type="Virtual&quot;Machine">vm-&lt;1&gt;</obj>');
  });

  it('refuses names, types and characters that would break the document', () => {
    expect(() => serialize('a b', 'x')).toThrow(/invalid XML element name/);
    expect(() => serialize('x', { $type: 'T" onload="', a: '1' })).toThrow(/invalid xsi:type/);
    expect(() => serialize('x', 'bell\u0007')).toThrow(/XML 1.0/);
    expect(() => serialize('x', Number.NaN)).toThrow(/finite/);
  });

  it('writes arrays as repeated elements, xsi:type for typed objects and anyType values, skips undefined', () => {
    expect(serialize('pathSet', ['name', 'runtime'])).toBe('<pathSet>name</pathSet><pathSet>runtime</pathSet>');
    expect(serialize('extraConfig', [{ key: 'k', value: { $type: 'xsd:string', $value: 'v&' } }])).toBe(
      '<extraConfig><key>k</key><value xsi:type="xsd:string">v&amp;</value></extraConfig>',
    );
    expect(serialize('spec', { a: undefined, b: 1, c: true })).toBe('<spec><b>1</b><c>true</c></spec>');
  });

  it('wraps a call in a SOAP envelope with _this first', () => {
    const xml = envelope('PowerOnVM_Task', moRef('VirtualMachine', 'vm-1'));
    expect(xml).toContain('<soapenv:Body><PowerOnVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">vm-1</_this></PowerOnVM_Task></soapenv:Body>');
    // What we write, the parser reads back.
    const parsed = parseXml(envelope('X', moRef('T', 'v'), { s: 'a "q" & <b>' }));
    const call = kid(kid(kid(parsed, 'Envelope'), 'Body'), 'X');
    expect(decodeValue(kid(call, 's')!)).toBe('a "q" & <b>');
  });
});

describe('response decoding', () => {
  const val = (xml: string) =>
    decodeValue(
      kid(parseXml(`<r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">${xml}</r>`), 'r')!.val![0] as never,
    );

  it('decodes primitives, enums, MoRefs and ArrayOf types', () => {
    expect(val('<val xsi:type="xsd:int">42</val>')).toBe(42);
    expect(val('<val xsi:type="xsd:boolean">true</val>')).toBe(true);
    expect(val('<val xsi:type="VirtualMachinePowerState">poweredOn</val>')).toBe('poweredOn');
    expect(val('<val xsi:type="ManagedObjectReference" type="HostSystem">host-1</val>')).toEqual(moRef('HostSystem', 'host-1'));
    expect(val('<val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="HostSystem">h1</ManagedObjectReference></val>')).toEqual([
      moRef('HostSystem', 'h1'),
    ]);
    expect(val('<val xsi:type="ArrayOfString"></val>')).toEqual([]);
  });

  it('decodes data objects with $type, repeated fields as arrays, numeric entities', () => {
    const o = val(
      '<val xsi:type="ArrayOfOptionValue"><OptionValue><key>a</key><value xsi:type="xsd:string">x&#34;&#xA;y</value></OptionValue></val>',
    ) as VimObject[];
    expect(o).toEqual([{ key: 'a', value: 'x"\ny' }]);
    const nic = val('<val xsi:type="GuestNicInfo"><ipAddress>1.2.3.4</ipAddress><ipAddress>5.6.7.8</ipAddress><network>n</network></val>') as VimObject;
    expect(nic).toEqual({ $type: 'GuestNicInfo', ipAddress: ['1.2.3.4', '5.6.7.8'], network: 'n' });
    expect(asArray(val('<val xsi:type="GuestNicInfo"><ipAddress>1.2.3.4</ipAddress></val>') as VimObject['x'])).toHaveLength(1);
  });
});
